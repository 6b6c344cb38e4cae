"""Golden bundles: every example spec's bundle is pinned under tests/golden/<spec>/bundle/.

The spec directory (the one volatile input: data configs record it as an absolute path) is
fixed to `/spec-dir`, so the pinned files, the bundle name and the manifest are exact. The
bundle's `plan.json` is not stored again: it must equal the golden plan beside the bundle,
`tests/golden/<spec>/plan.json` (`tests/plan/test_plan_golden.py`). Refresh after an intended
change, every golden file at once: `pytest -m golden --update-golden`.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from specc.diagnostics.check import check_file
from specc.emit.bundle import all_files, build_bundle
from specc.plan import build_plan, plan_json

GOLDEN = ROOT / "tests" / "golden"
SPEC_DIR = "/spec-dir"
REFRESH = "pytest -m golden --update-golden"
PLAN = "plan.json"
"""Stored once, beside the bundle: `tests/golden/<spec>/plan.json`."""


def _bundle_files(spec_path: Path) -> dict[str, str]:
    result = check_file(spec_path)
    assert result.valid
    plan = json.loads(plan_json(build_plan(result.spec)))
    bundle = build_bundle(result.spec, plan, SPEC_DIR)
    return all_files(bundle)  # the bundle's name is pinned too: manifest.json records it


@pytest.mark.golden
@pytest.mark.parametrize("spec_path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_launch_golden_bundle(spec_path, update_golden):
    files = _bundle_files(spec_path)
    golden = GOLDEN / spec_path.stem / "bundle"
    plan = files.pop(PLAN)
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        for relative, text in files.items():
            (golden / relative).parent.mkdir(parents=True, exist_ok=True)
            (golden / relative).write_text(text)
        return
    stored_plan = GOLDEN / spec_path.stem / PLAN
    assert stored_plan.is_file(), f"no golden plan for {spec_path.name}; create it with `{REFRESH}`"
    assert plan == stored_plan.read_text(), f"the bundle's {PLAN} differs from {stored_plan}; if intended: `{REFRESH}`"
    assert golden.is_dir(), f"no golden bundle for {spec_path.name}; create it with `{REFRESH}`"
    pinned = {str(p.relative_to(golden)): p.read_text() for p in golden.rglob("*") if p.is_file()}
    assert sorted(pinned) == sorted(files), f"bundle files differ from {golden}; if intended: `{REFRESH}`"
    for relative, text in files.items():
        if pinned[relative] != text:
            diff = "".join(difflib.unified_diff(pinned[relative].splitlines(True), text.splitlines(True),
                                                f"golden/{relative}", f"emitted/{relative}"))
            pytest.fail(f"{spec_path.stem}: {relative} differs from the golden bundle; if intended: "
                        f"`{REFRESH}`\n{diff[:6000]}")
