"""The TPU path really runs: torch-xla SPMD on XLA's CPU backend with four devices.

The tiny spec with a TPU target trains on a (2, 2) fsdp x tensor mesh; its loss curve
matches the GPU path's single-process CPU run (main environment, torch 2.13.0) for the same
data and seed; a run killed with SIGKILL resumes from its last committed torch-xla
distributed checkpoint and reproduces the uninterrupted curve.

Each TPU-path process compiles a few XLA programs (seconds each), so the runs are shared
by module-scoped fixtures and kept to a few steps.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tpu_helpers import (CPU_PARALLEL, ROOT, SPMD_PARALLEL, cpu_command, cpu_env, make_shards, read_metrics,
                         require_tpu_env, run_stage, schedule, tpu_command, tpu_env, write_stage_config)

pytestmark = pytest.mark.slow  # torch-xla in .venv-tpu, training processes

STEPS = schedule()["steps"]
LOSS_RTOL = 1e-5
"""fp32 on both sides; XLA fuses and reorders reductions, so the curves differ by at most 2e-7
relative in loss and 1.1e-6 in gradient norm over 8 AdamW steps (measured); the tolerance leaves
room for other CPUs' vector widths."""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    require_tpu_env()
    return make_shards(tmp_path_factory.mktemp("tpu") / "shards")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory, shards) -> Path:
    """The GPU path (`pretrain`), one process on CPU: the reference curve."""
    config = write_stage_config(tmp_path_factory.mktemp("cpu") / "run", "pretrain", CPU_PARALLEL, shards, "cpu", 1)
    run_stage(cpu_command(config), cpu_env())
    return config.parent


@pytest.fixture(scope="module")
def tpu_run(tmp_path_factory, shards) -> Path:
    """The TPU path (`pretrain_tpu`) on a (2, 2) fsdp x tensor mesh, uninterrupted."""
    config = write_stage_config(tmp_path_factory.mktemp("tpu") / "run", "pretrain_tpu", SPMD_PARALLEL, shards,
                                "tpu-v5p", 4)
    result = run_stage(tpu_command(config), tpu_env())
    assert "SPMD mesh data 1 fsdp 2 tensor 2 over 4 CPU devices" in result.stdout
    return config.parent


def curve(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir / "pretrain" / "metrics.jsonl") if "loss" in r}


def test_tpu_loss_matches_the_cpu_run(cpu_run, tpu_run):
    reference, spmd = curve(cpu_run), curve(tpu_run)
    assert sorted(spmd) == sorted(reference) == list(range(1, STEPS + 1))
    for step, record in spmd.items():
        expected = reference[step]
        assert record["loss"] == pytest.approx(expected["loss"], rel=LOSS_RTOL), step
        assert record["grad_norm"] == pytest.approx(expected["grad_norm"], rel=10 * LOSS_RTOL), step
        assert record["lr"] == pytest.approx(expected["lr"], rel=1e-12), step
    assert spmd[STEPS]["loss"] < spmd[1]["loss"] - 0.1  # it learns
    assert spmd[STEPS]["val_loss"] == pytest.approx(reference[STEPS]["val_loss"], rel=LOSS_RTOL)
    # the lr is fed as data: two training programs (before and after the optimizer state exists)
    assert spmd[STEPS]["xla_compiles"] == 2


def test_tpu_layout_is_applied_and_outputs_match_the_gpu_path(cpu_run, tpu_run):
    out = tpu_run / "pretrain"
    sharding = json.loads((out / "sharding.json").read_text())
    assert sharding["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    parameters = sharding["parameters"]
    # column-parallel (tensor, fsdp) and row-parallel (fsdp, tensor) matrices: 2 x 2 tiles over 4 devices
    assert parameters["layers.0.attention.wq.weight"].startswith("{devices=[2,2]")
    assert parameters["layers.0.feed_forward.w2.weight"].startswith("{devices=[2,2]")
    assert parameters["layers.0.attention.wq.weight"] != parameters["layers.0.feed_forward.w2.weight"]
    assert parameters["norm.weight"] == "{replicated}"
    assert "output.weight" not in parameters  # tied to the embedding: one parameter

    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["steps"] == STEPS
    assert (out / "checkpoints" / f"step-{STEPS:08d}" / "checkpoint.json").is_file()
    spmd_weights = load_file(out / "final" / "model.safetensors")
    cpu_weights = load_file(cpu_run / "pretrain" / "final" / "model.safetensors")
    assert sorted(spmd_weights) == sorted(cpu_weights)
    for name, tensor in cpu_weights.items():
        assert spmd_weights[name].shape == tensor.shape
        assert (spmd_weights[name] - tensor).abs().max().item() < 1e-4, name
    assert json.loads((out / "final" / "config.json").read_text()) == \
        json.loads((cpu_run / "pretrain" / "final" / "config.json").read_text())


def committed(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.glob("step-*") if (p / "checkpoint.json").is_file())


def test_tpu_sigkill_then_restart_resumes_the_curve(tmp_path, shards, tpu_run):
    config = write_stage_config(tmp_path / "run", "pretrain_tpu", SPMD_PARALLEL, shards, "tpu-v5p", 4)
    checkpoints = config.parent / "pretrain" / "checkpoints"
    process = subprocess.Popen(tpu_command(config), env=tpu_env(), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not committed(checkpoints):  # the first checkpoint (step 3) is committed: kill at once
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint committed in 600 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (config.parent / "pretrain" / "_SUCCESS.json").exists()
    resume_from = int(committed(checkpoints)[-1].split("-")[1])
    assert resume_from < STEPS

    resumed = run_stage(tpu_command(config), tpu_env())
    assert f"steps {resume_from}->{STEPS}" in resumed.stdout
    reference, records = curve(tpu_run), read_metrics(config.parent / "pretrain" / "metrics.jsonl")
    assert sorted({r["step"] for r in records}) == list(range(1, STEPS + 1))
    for record in records:  # every line, including steps recomputed after the kill
        expected = reference[record["step"]]
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6), record["step"]
        assert record["lr"] == pytest.approx(expected["lr"], rel=1e-12), record["step"]
        assert math.isfinite(record["grad_norm"])
    assert json.loads((config.parent / "pretrain" / "_SUCCESS.json").read_text())["steps"] == STEPS

    again = run_stage(tpu_command(config), tpu_env())
    assert "already complete" in again.stdout


@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_tpu_runtime_refuses_precisions_it_does_not_run(tmp_path, shards, precision):
    """fp16 and fp8 used to run as bf16 on the TPU path; now the stage fails before tracing."""
    config = write_stage_config(tmp_path / "run", "pretrain_tpu", {**SPMD_PARALLEL, "precision": precision}, shards,
                                "tpu-v5p", 4)
    result = subprocess.run(tpu_command(config), env=tpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"precision {precision} does not run on the TPU runtime, which trains in bf16 or fp32 only" in result.stderr
    assert not (config.parent / "pretrain" / "metrics.jsonl").exists()
