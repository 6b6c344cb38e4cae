"""Each `tests/specs/invalid/<case>/` must fail with exactly the diagnostics in its
`expected.txt` (file:line:col, code, key path, message, hint) and exit code 1.

`args.txt`, when present, holds one `--set` override per line. Refresh the expected
files after an intended change with `pytest -m golden --update-golden` (every golden file)
and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from specc.cli import main

CASES = sorted(p for p in (ROOT / "tests" / "specs" / "invalid").iterdir() if p.is_dir())


def _run(case: Path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.chdir(case)
    args = ["validate", "spec.yaml"]
    overrides = case / "args.txt"
    if overrides.exists():
        for line in overrides.read_text().splitlines():
            args += ["--set", line]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.golden
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_invalid_case(case, monkeypatch, capsys, update_golden):
    code, output = _run(case, monkeypatch, capsys)
    assert "Traceback" not in output
    assert code == 1, output
    expected_file = case / "expected.txt"
    if update_golden or not expected_file.exists():
        expected_file.write_text(output)
        if not update_golden:
            pytest.fail(f"wrote missing {expected_file}; review it and rerun")
    assert output == expected_file.read_text(), (
        f"diagnostics changed for {case.name}; if intended, rerun `pytest -m golden --update-golden` and review the diff")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_invalid_case_json(case, monkeypatch, capsys):
    """The JSON format reports the same number of errors, each with a position and code."""
    import json

    monkeypatch.chdir(case)
    args = ["validate", "spec.yaml", "--format", "json"]
    overrides = case / "args.txt"
    if overrides.exists():
        for line in overrides.read_text().splitlines():
            args += ["--set", line]
    assert main(args) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    diagnostics = report["files"][0]["diagnostics"]
    assert any(d["severity"] == "error" for d in diagnostics)
    for diagnostic in diagnostics:
        assert diagnostic["code"] and diagnostic["position"]["file"]
