"""Fault recovery: a training process killed mid-run (SIGKILL: no warning; SIGTERM: Slurm's
pre-timeout signal) and restarted reproduces the uninterrupted loss curve bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_helpers import losses_by_step, make_shards, read_metrics, stage_config, tiny_model, tiny_schedule, write_config

pytestmark = pytest.mark.slow  # training processes killed and restarted

ROOT = Path(__file__).resolve().parent.parent.parent
STEPS = 40
SCHEDULE = tiny_schedule(steps=STEPS, checkpoint_interval=4, keep_checkpoints=2, eval_interval=20, eval_batches=1)


def stage_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # the same kernels in every run, so results can be bit-identical
    return env


def start(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "specc.runtime", str(config_path)], env=stage_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and any(r.get("step", 0) >= step for r in read_metrics(metrics)):
            return
        assert process.poll() is None, f"training ended before step {step}: {process.communicate()[0][-3000:]}"
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def setup_run(root: Path, shard_dir: Path) -> Path:
    run_dir = root
    run_dir.mkdir(parents=True)
    config = stage_config(run_dir, tiny_model(tie_embeddings=True), SCHEDULE, shard_dir=str(shard_dir))
    return write_config(run_dir / "config.json", config)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("resume") / "shards")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shards) -> Path:
    config = setup_run(tmp_path_factory.mktemp("straight") / "run", shards)
    result = subprocess.run([sys.executable, "-m", "specc.runtime", str(config)], env=stage_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return config.parent


def assert_same_curve(run_dir: Path, reference_dir: Path) -> None:
    reference = read_metrics(reference_dir / "pretrain" / "metrics.jsonl")
    resumed = read_metrics(run_dir / "pretrain" / "metrics.jsonl")
    expected = {r["step"]: r for r in reference}
    assert sorted({r["step"] for r in resumed}) == sorted(expected) == list(range(1, STEPS + 1))
    for record in resumed:  # every line, including steps recomputed after the kill
        ref = expected[record["step"]]
        assert record["loss"] == ref["loss"], record["step"]
        assert record["grad_norm"] == ref["grad_norm"], record["step"]
        assert record["lr"] == ref["lr"], record["step"]
        if "val_loss" in record:
            assert record["val_loss"] == ref["val_loss"]


def test_sigkill_then_restart_reproduces_the_curve(tmp_path, shards, uninterrupted):
    config = setup_run(tmp_path / "run", shards)
    metrics = config.parent / "pretrain" / "metrics.jsonl"
    process = start(config)
    wait_for_step(process, metrics, 10)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    checkpoints = sorted(p.name for p in (config.parent / "pretrain" / "checkpoints").glob("step-*"))
    assert checkpoints and len(checkpoints) <= SCHEDULE["keep_checkpoints"]
    assert not (config.parent / "pretrain" / "_SUCCESS.json").exists()
    logged_before_kill = max(losses_by_step(metrics))

    resumed = subprocess.run([sys.executable, "-m", "specc.runtime", str(config)], env=stage_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    resumed_from = int(checkpoints[-1].split("-")[1])
    assert f"steps {resumed_from}->{STEPS}" in resumed.stdout
    assert_same_curve(config.parent, uninterrupted)
    # the steps between the last checkpoint and the kill were recomputed, identically
    steps = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert len(steps) - len(set(steps)) == logged_before_kill - resumed_from


def test_sigterm_checkpoints_exits_75_and_resumes(tmp_path, shards, uninterrupted):
    config = setup_run(tmp_path / "run", shards)
    metrics = config.parent / "pretrain" / "metrics.jsonl"
    process = start(config)
    wait_for_step(process, metrics, 6)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 75, output[-3000:]
    stopped_at = max(losses_by_step(metrics))
    assert (config.parent / "pretrain" / "checkpoints" / f"step-{stopped_at:08d}" / "checkpoint.json").is_file()

    resumed = subprocess.run([sys.executable, "-m", "specc.runtime", str(config)], env=stage_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"steps {stopped_at}->{STEPS}" in resumed.stdout
    assert_same_curve(config.parent, uninterrupted)
    steps = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert len(steps) == len(set(steps)) == STEPS  # nothing recomputed: the signal checkpoint was exact


def test_completed_stage_outputs_and_skip(uninterrupted):
    from safetensors.torch import load_file

    from specc.runtime.train.model import build_model
    from specc.spec.model import ModelSpec

    out = uninterrupted / "pretrain"
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["steps"] == STEPS
    spec = ModelSpec.model_validate(json.loads((out / "final" / "config.json").read_text()))
    model = build_model(spec, seed=123)
    weights = load_file(out / "final" / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert missing == ["output.weight"] and unexpected == []  # the tied head is stored once
    assert model.output.weight.data_ptr() == model.embeddings.tok_embeddings.weight.data_ptr()
    again = subprocess.run([sys.executable, "-m", "specc.runtime", str(uninterrupted / "config.json")],
                           env=stage_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout
