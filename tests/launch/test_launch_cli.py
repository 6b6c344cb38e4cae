"""`specc launch/status/cancel` on bad input: a clear one-line error, exit 1, no traceback,
nothing written or submitted; saved plans launch exactly as reviewed."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from launch_helpers import TINY, specc, tiny_copy

from specc.launch.task import classify_failure


def _assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_launch_bad_flag_is_a_user_error(tmp_path):
    _assert_user_error(specc("launch", str(TINY), "--executor", "kubernetes", "--out", str(tmp_path / "o")),
                       "invalid choice")
    _assert_user_error(specc("launch", str(TINY), "--frobnicate"), "unrecognized arguments")
    assert not (tmp_path / "o").exists()


def test_launch_missing_target_is_a_user_error(tmp_path):
    _assert_user_error(specc("launch", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")),
                       "nope.yaml: no such file or directory")
    assert not (tmp_path / "o").exists()


def test_launch_invalid_spec_shows_located_diagnostics_and_writes_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(TINY.read_text().replace("num_layers: 2", "num_layers: -2"))
    result = specc("launch", str(spec), "--out", str(tmp_path / "o"))
    _assert_user_error(result, f"{spec}:", "model.num_layers", "nothing emitted")
    assert not (tmp_path / "o").exists()
    _assert_user_error(specc("launch", str(TINY), "--set", "model.num_layers=zero", "--out", str(tmp_path / "o")),
                       "<override #1>")
    assert not (tmp_path / "o").exists()


def test_launch_status_and_cancel_of_a_non_bundle(tmp_path):
    _assert_user_error(specc("status", str(tmp_path)), "not a bundle directory")
    _assert_user_error(specc("cancel", str(tmp_path)), "not a bundle directory")


def test_launch_dry_run_then_status_says_never_launched(tmp_path):
    result = specc("launch", str(TINY), "--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (bundle,) = tmp_path.iterdir()
    assert f"bundle: {bundle} (written)" in result.stdout
    assert not (bundle / "jobs").exists()  # nothing submitted
    _assert_user_error(specc("status", str(bundle)), "never launched")


def test_launch_saved_plan_emits_the_reviewed_plan(tmp_path):
    plan_file = tmp_path / "plan.json"
    planned = specc("plan", str(TINY), "--set", "schedule.lr=1e-3", "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    _assert_user_error(specc("launch", str(plan_file), "--dry-run", "--out", str(tmp_path / "o")), "--spec")
    result = specc("launch", str(plan_file), "--spec", str(TINY), "--dry-run", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    (bundle,) = (tmp_path / "o").iterdir()
    assert json.loads((bundle / "plan.json").read_text()) == json.loads(plan_file.read_text())
    assert yaml.safe_load((bundle / "spec.resolved.yaml").read_text())["schedule"]["lr"] == 1e-3
    # The bundle's own plan.json launches that bundle.
    again = specc("launch", str(bundle / "plan.json"), "--dry-run")
    assert again.returncode == 0 and str(bundle) in again.stdout


def test_launch_saved_plan_refuses_a_changed_spec(tmp_path):
    spec = tiny_copy(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert specc("plan", str(spec), "-o", str(plan_file)).returncode == 0
    spec.write_text(TINY.read_text().replace("lr: 3e-3", "lr: 2e-3"))
    _assert_user_error(specc("launch", str(plan_file), "--spec", str(spec), "--out", str(tmp_path / "o")),
                       "no longer matches the saved plan")
    assert not (tmp_path / "o").exists()


def test_launch_failure_classification():
    assert classify_failure(-9, "", 3).kind == "oom"
    assert classify_failure(137, "", None).kind == "oom"
    oom = classify_failure(1, "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of "
                              "memory. Tried to allocate 2.00 GiB\n", 0)
    assert oom.kind == "oom" and "step 0" in oom.reason and "Tried to allocate" in oom.reason
    config = classify_failure(1, "specc data: error: source 'web': no files match 'x/*'\n", None)
    assert config.kind == "config" and "no files match" in config.reason
    crash = classify_failure(1, "Traceback (most recent call last):\nValueError: loss is nan\n", 12)
    assert crash.kind == "exception" and crash.reason == "ValueError: loss is nan (at step 12)"
    assert classify_failure(-15, "", None).kind == "signal"
    assert classify_failure(3, "", None).reason.startswith("exit status 3")


def test_launch_dry_run_imports_neither_torch_nor_submitit(tmp_path):
    code = ("import sys; from specc.cli import main; "
            f"assert main(['launch', {str(TINY)!r}, '--dry-run', '--out', {str(tmp_path)!r}]) == 0; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'submitit')); "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_launch_out_that_is_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    _assert_user_error(specc("launch", str(TINY), "--dry-run", "--out", str(blocker)), "cannot write a bundle")
    assert blocker.read_text() == "not a directory"
