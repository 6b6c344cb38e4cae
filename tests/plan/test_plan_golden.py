"""Golden plans: `specc plan --json` of every example spec, compared byte for byte.

Each plan is stored once, as `tests/golden/<spec>/plan.json`; the golden bundle beside it
(`tests/emit/test_bundle_golden.py`) holds every other file of the bundle and is checked to carry
this same plan. Refresh on purpose only, every golden file at once: `pytest -m golden --update-golden`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from conftest import ROOT, example_specs
from specc.diagnostics.check import check_file
from specc.plan import build_plan, plan_json

GOLDEN = ROOT / "tests" / "golden"
REGENERATE = "pytest -m golden --update-golden"


def _plan_text(path: Path) -> str:
    result = check_file(path)
    assert result.valid, [d.to_text() for d in result.diagnostics]
    return plan_json(build_plan(result.spec))


@pytest.mark.golden
@pytest.mark.parametrize("path", example_specs(), ids=lambda p: p.stem)
def test_golden_plan(path: Path, update_golden: bool):
    expected_file = GOLDEN / path.stem / "plan.json"
    actual = _plan_text(path)
    if update_golden:
        expected_file.parent.mkdir(parents=True, exist_ok=True)
        expected_file.write_text(actual)
        return
    if not expected_file.exists():
        pytest.fail(f"missing golden plan {expected_file.relative_to(ROOT)}; create it with `{REGENERATE}`")
    expected = expected_file.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"golden/{path.stem}/plan.json", "now", n=2))
        pytest.fail(f"plan of {path.name} changed:\n{diff}\nif intended, regenerate with `{REGENERATE}`")


def test_plan_is_deterministic():
    path = ROOT / "specs" / "mixtral-8x7b-h100x128.yaml"
    assert _plan_text(path) == _plan_text(path)


def test_every_example_plans_with_contract_fields():
    """Every example (GPU and TPU) that pretrains gets memory, time, MFU, cost and a scaling check;
    a fine-tune (no pretrain stage) gets none of them, and its alignment stages' memory."""
    for path in example_specs():
        plan = build_plan(check_file(path).spec).model_dump()
        assert plan["schema_version"] == 1
        if "pretrain" not in plan["stages"] and "pretrain_tpu" not in plan["stages"]:
            assert plan["layout"] is plan["memory"] is plan["time"] is plan["scaling"] is None
            assert plan["candidates"] == [] and plan["alignment"]
            continue
        assert set(plan["memory"]["breakdown_gib"]) == {"params", "grads", "optimizer", "activations", "other"}
        assert plan["memory"]["per_device_gib"] > 0
        assert plan["time"]["step_s"] > 0 and 0 < plan["time"]["mfu"] < 1
        assert plan["time"]["cost_usd"] > 0
        assert plan["scaling"]["predicted_loss"] > 1.69
        assert plan["candidates"][0]["layout"] == plan["layout"]
