"""The bundle emitter: layout, determinism, scripts that parse, atomic writes, --force."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from launch_helpers import ROOT, SPECS, TINY, emit, specc, wait_until

from specc.emit import bundle as bundle_module
from specc.emit.bundle import EmitError, all_files, build_bundle, write_bundle
from specc.emit.render import Renderer
from specc.launch.launcher import LaunchError, verify_manifest

EXAMPLES = sorted(SPECS.glob("*.yaml"))


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_launch_emit_layout_matches_the_bundle_contract(tmp_path):
    bundle = emit(TINY, tmp_path)
    assert bundle.parent == tmp_path and bundle.name.startswith("tiny-") and len(bundle.name) == len("tiny-") + 12
    files = set(_tree(bundle))
    for top in ("spec.resolved.yaml", "plan.json", "manifest.json", "README.md"):
        assert top in files
    stages = sorted({Path(f).parts[1] for f in files if f.startswith("stages/")})
    assert stages[0] == "01-data" and stages[1] == "02-tokenize"
    for stage in stages:
        for name in ("config.json", "run.sh", "job.sbatch"):
            assert f"stages/{stage}/{name}" in files
        config = json.loads((bundle / "stages" / stage / "config.json").read_text())
        assert {"stage", "run_dir", "params"} <= set(config) <= {"stage", "run_dir", "params", "tracking"}
        assert stage.endswith(config["stage"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["bundle"] == bundle.name and set(manifest["files"]) == files - {"manifest.json"}
    assert manifest["specc_version"]


def test_launch_emit_is_byte_identical_across_processes(tmp_path):
    """Two separate `specc launch --dry-run` runs, with different hash seeds, write the same bytes."""
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        result = specc("launch", str(TINY), "--dry-run", "--out", str(out), env={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        (bundle,) = out.iterdir()
        trees.append((bundle.name, _tree(bundle)))
    assert trees[0] == trees[1]


def test_launch_emit_reuses_an_identical_bundle(tmp_path):
    first = emit(TINY, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    again, written = write_bundle(_tiny_bundle(), tmp_path)
    assert again == first and not written
    assert before == {p: p.stat().st_mtime_ns for p in first.rglob("*")}


def _tiny_bundle(overrides: list[str] = ()):
    from specc.diagnostics.check import check_file
    from specc.plan import build_plan, plan_json

    result = check_file(TINY, list(overrides))
    plan = json.loads(plan_json(build_plan(result.spec, overrides=list(overrides))))
    return build_bundle(result.spec, plan, str(SPECS))


def test_launch_emit_changed_settings_give_a_new_bundle(tmp_path):
    first = emit(TINY, tmp_path)
    second = emit(TINY, tmp_path, ["schedule.lr=1e-3"])
    assert first != second and first.exists() and second.exists()


def test_launch_emit_refuses_to_overwrite_a_different_bundle_without_force(tmp_path):
    bundle = emit(TINY, tmp_path)
    script = bundle / "stages" / "01-data" / "run.sh"
    script.write_text(script.read_text() + "echo edited by hand\n")
    (bundle / "jobs").mkdir()
    with pytest.raises(EmitError, match="--force"):
        write_bundle(_tiny_bundle(), tmp_path)
    assert "edited by hand" in script.read_text()
    result = specc("launch", str(TINY), "--dry-run", "--out", str(tmp_path))
    assert result.returncode == 1 and "--force" in result.stderr and "Traceback" not in result.stderr
    assert "edited by hand" in script.read_text()

    result = specc("launch", str(TINY), "--dry-run", "--force", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "edited by hand" not in script.read_text() and not (bundle / "jobs").exists()
    assert [p.name for p in tmp_path.iterdir()] == [bundle.name]  # nothing left aside


def test_launch_refuses_a_bundle_modified_after_emit(tmp_path):
    bundle = emit(TINY, tmp_path)
    verify_manifest(bundle)
    config = bundle / "stages" / "01-data" / "config.json"
    config.write_text(config.read_text().replace('"data"', '"tokenize"', 1))
    with pytest.raises(LaunchError, match="modified after emit"):
        verify_manifest(bundle)
    result = specc("launch", str(bundle))
    assert result.returncode == 1 and "modified after emit" in result.stderr and "Traceback" not in result.stderr


def test_launch_emit_failure_midway_leaves_no_bundle(tmp_path, monkeypatch):
    """An interruption while files are written (here the 4th) removes the partial temporary directory."""
    calls = []
    real = bundle_module._write_file

    def interrupted(path, text):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(bundle_module, "_write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(_tiny_bundle(), tmp_path)
    assert len(calls) == 4
    assert list(tmp_path.iterdir()) == []


PAUSE_AT = """
import signal, sys
from pathlib import Path

from specc.emit import bundle

marker, moment, out, spec = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
real_all_files, real_write_file, real_replace = bundle.all_files, bundle._write_file, bundle._replace
written, total = 0, None


def pause():  # say where the write has got to (atomically: the test reads it once it exists), then wait for SIGKILL
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(str(written))
    partial.replace(marker)
    signal.pause()


def all_files(b):
    global total
    files = real_all_files(b)
    total = len(files)
    return files


def write_file(path, text):
    global written
    if written == {"first": 0, "one": 1, "half": total // 2}.get(moment):
        pause()
    real_write_file(path, text)
    written += 1


def replace(temporary, final):
    if moment == "last":
        pause()
    real_replace(temporary, final)
    if moment == "renamed":
        pause()


bundle.all_files, bundle._write_file, bundle._replace = all_files, write_file, replace
from specc.cli import main

sys.exit(main(["launch", spec, "--dry-run", "--out", out]))
"""
"""Runs a real `specc launch --dry-run` that stops at a given moment of the bundle write (before
its first file, after one, halfway, after the last, after the rename into place), says so in a
marker file and waits there to be killed: the test kills at that moment, not after a guessed delay."""


@pytest.mark.parametrize("moment", ["first", "one", "half", "last", "renamed"])
def test_launch_emit_killed_at_any_moment_leaves_nothing_half_made(tmp_path, moment):
    """SIGKILL a real `specc launch --dry-run` at each moment of its bundle write: the out directory
    then holds either no bundle (a leftover is only ever a hidden `.tmp` directory) or, once
    renamed into place, a complete one."""
    out, marker = tmp_path / "out", tmp_path / "paused"
    process = subprocess.Popen([sys.executable, "-c", PAUSE_AT, str(marker), moment, str(out), str(TINY)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, 120, "the write to reach " + moment,
                   interval=0.01)
        assert marker.exists(), f"specc exited ({process.returncode}) before {moment}: {process.stderr.read()}"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert int(marker.read_text()) > 0 or moment == "first"
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert all(p.name.endswith(".tmp") for p in out.iterdir() if p.name.startswith("."))
    if moment == "renamed":
        [bundle] = visible
        verify_manifest(bundle)  # complete: every listed file present with its sha256
    else:
        assert visible == []


def test_launch_every_script_parses_and_starts_strict(tmp_path):
    """Every run.sh / job.sbatch / submit.sh of every example bundle passes `bash -n`, and the first
    command (after the shebang, #SBATCH lines and comments) is `set -euo pipefail`."""
    checked = 0
    for spec in EXAMPLES:
        bundle = emit(spec, tmp_path / spec.stem)
        for script in [*bundle.glob("stages/*/run.sh"), *bundle.glob("stages/*/job.sbatch"), bundle / "submit.sh"]:
            result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{script}: {result.stderr}"
            lines = script.read_text().splitlines()
            assert lines[0] == "#!/usr/bin/env bash"
            commands = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
            assert commands[0] == "set -euo pipefail", script
            assert os.access(script, os.X_OK)
            checked += 1
    assert checked >= 3 * len(EXAMPLES)


def test_launch_slurm_directives_come_from_the_spec(tmp_path):
    bundle = emit(SPECS / "llama3-70b-h100x64.yaml", tmp_path)
    sbatch = next(bundle.glob("stages/*-pretrain/job.sbatch")).read_text()
    for line in ("#SBATCH --nodes=8", "#SBATCH --gpus-per-node=8", "#SBATCH --exclusive",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --account=llm-pretrain", "#SBATCH --qos=high",
                 "#SBATCH --time=2-00:00:00", "#SBATCH --constraint='h100&ib'", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@90", "#SBATCH --mail-type=FAIL,REQUEUE",
                 "#SBATCH --mail-user=oncall@example.org"):
        assert line in sbatch.splitlines()
    directives = [line for line in sbatch.splitlines() if line.startswith("#SBATCH")]
    assert directives == sorted(directives)


def test_launch_templates_resolve_per_target_with_fallback(tmp_path):
    (tmp_path / "default").mkdir()
    (tmp_path / "slurm").mkdir()
    (tmp_path / "default" / "run.sh.j2").write_text("default {{ value }}\n")
    (tmp_path / "default" / "only.sh.j2").write_text("only default {{ value }}\n")
    (tmp_path / "slurm" / "run.sh.j2").write_text("slurm {{ value }}\n")
    slurm, local = Renderer("slurm", tmp_path), Renderer("local", tmp_path)
    assert slurm.render("run.sh.j2", value="a b") == "slurm 'a b'\n"
    assert local.render("run.sh.j2", value="a b") == "default 'a b'\n"
    assert slurm.render("only.sh.j2", value="x") == "only default x\n"


def test_launch_all_files_of_a_bundle_are_listed_in_its_manifest(tmp_path):
    bundle = _tiny_bundle()
    files = all_files(bundle)
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == set(files) - {"manifest.json"}


def test_relaunching_a_bundle_checks_its_inputs_again(tmp_path, capsys):
    """An input that disappears between emit and relaunch (a task file moved) stops the relaunch
    before anything runs, located in the bundle's own spec.resolved.yaml; --no-path-checks skips it."""
    import shutil

    from launch_helpers import FAST_TRAINING

    from specc.cli import main

    shutil.copy(TINY, tmp_path / "tiny.yaml")
    shutil.copytree(SPECS / "data", tmp_path / "data")
    overrides = [word for override in FAST_TRAINING for word in ("--set", override)]
    assert main(["launch", str(tmp_path / "tiny.yaml"), "--dry-run", "--out", str(tmp_path / "out"), *overrides]) == 0
    bundle = next((tmp_path / "out").iterdir())
    assert json.loads((bundle / "manifest.json").read_text())["spec_dir"] == str(tmp_path)
    assert main(["launch", str(bundle), "--dry-run"]) == 0
    (tmp_path / "data" / "tiny" / "tasks" / "heldout.jsonl").unlink()
    capsys.readouterr()
    assert main(["launch", str(bundle), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert f"{bundle / 'spec.resolved.yaml'}:" in err and "heldout.jsonl" in err and "not launched" in err, err
    assert "Traceback" not in err
    assert main(["launch", str(bundle), "--dry-run", "--no-path-checks"]) == 0
