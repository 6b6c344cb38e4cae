"""`specc plan` on the command line: validation first, JSON output, files, errors without tracebacks,
and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from specc.cli import main

SPEC = str(ROOT / "specs" / "llama3-8b-h100x8.yaml")
INVALID = ROOT / "tests" / "specs" / "invalid"


def test_plan_json_follows_contract(capsys):
    assert main(["plan", SPEC, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    for key in ("schema_version", "spec", "model", "hardware", "layout", "memory", "time", "candidates",
                "warnings", "scaling"):
        assert key in plan
    assert plan["model"]["params"] == 8_030_261_248
    assert set(plan["layout"]) >= {"dp", "tp", "pp", "cp", "ep", "vpp", "zero_stage", "micro_batch", "grad_accum", "recompute"}
    assert plan["layout"]["dp"] * plan["layout"]["tp"] * plan["layout"]["pp"] * plan["layout"]["cp"] == 8


def test_output_file_matches_stdout(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", SPEC, "-o", str(out), "--json"]) == 0
    assert out.read_text() == capsys.readouterr().out
    assert list(json.loads(out.read_text())) == sorted(json.loads(out.read_text()))


def test_text_report_renders(capsys):
    assert main(["plan", SPEC]) == 0
    text = capsys.readouterr().out
    assert "Memory per device" in text and "MFU" in text


def test_overrides_are_applied_and_recorded(capsys):
    assert main(["plan", SPEC, "--json", "--set", "parallel.micro_batch=2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["layout"]["micro_batch"] == 2
    assert plan["spec"]["overrides"] == ["parallel.micro_batch=2"]


def test_search_flag_ranks_candidates(capsys):
    assert main(["plan", SPEC, "--json", "--search", "--top", "3"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["searched"] and 1 <= len(plan["candidates"]) <= 3
    steps = [c["time"]["step_s"] for c in plan["candidates"]]
    assert steps == sorted(steps)


def test_invalid_spec_exits_1_with_diagnostics(capsys):
    """An impossible layout is refused with validate's own diagnostic (R103: heads over tp)."""
    assert main(["plan", SPEC, "--set", "+parallel.tp=3"]) == 1
    captured = capsys.readouterr()
    assert "R103" in captured.out and "invalid" in captured.out and "Traceback" not in captured.err


def test_invalid_spec_file_exits_1(capsys):
    bad = INVALID / "bad-float" / "spec.yaml"
    assert main(["plan", str(bad), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and report["files"][0]["diagnostics"]


@pytest.mark.parametrize("argv", [["plan"], ["plan", SPEC, "--top", "0"], ["plan", SPEC, "--bogus"],
                                  ["plan", "does-not-exist.yaml"]])
def test_bad_flags_exit_1_without_traceback(argv, capsys):
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_plan_never_imports_torch():
    code = ("import contextlib, io, sys\n"
            "from specc.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main(['plan', {SPEC!r}, '--json', '--search'])\n"
            "print(rc, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["0", "False"], result.stderr


def test_against_shows_changes_with_detailed_exitcode(tmp_path, capsys):
    old = tmp_path / "old.json"
    assert main(["plan", SPEC, "-o", str(old)]) == 0
    capsys.readouterr()
    assert main(["plan", SPEC, "--against", str(old), "--detailed-exitcode"]) == 0
    assert "No changes" in capsys.readouterr().out
    assert main(["plan", SPEC, "--set", "parallel.micro_batch=2", "--against", str(old), "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert "layout.micro_batch: 1 -> 2" in out and "memory.per_device_gib" in out
    assert main(["plan", SPEC, "--set", "parallel.micro_batch=2", "--against", str(old)]) == 0


def test_against_unreadable_plan_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["plan", SPEC, "--against", str(bad)]) == 1
    assert "cannot read plan" in capsys.readouterr().err


def test_against_plan_of_another_shape_exits_1_naming_the_key(tmp_path, capsys):
    """A hand-edited old plan whose section is not an object was an AttributeError traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "layout": [1], "time": {"step_s": 1.0}}')
    assert main(["plan", SPEC, "--against", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: layout: expected a JSON object, got list" in err and "Traceback" not in err


def test_fsdp_under_pipelining_is_labelled_as_it_runs(capsys):
    """The runtime keeps FSDP parameters gathered across micro-batches when pp > 1 (no reshard after
    forward); the plan's layout line says so instead of plain `fsdp`."""
    assert main(["plan", SPEC, "--set", "+parallel.dp=4", "--set", "+parallel.pp=2"]) == 0
    assert "fsdp (gathered per step under pp)" in capsys.readouterr().out
    assert main(["plan", SPEC, "--set", "+parallel.dp=8"]) == 0
    out = capsys.readouterr().out
    assert "fsdp" in out and "gathered per step" not in out
