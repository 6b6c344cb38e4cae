"""The single-process training loop: the tiny spec learns, recompute and bf16 variants agree,
metrics carry what the planner needs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from train_helpers import make_shards, read_metrics, tiny_model, tiny_schedule

from specc.runtime.train.loop import TrainSettings, train
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec

TINY = yaml.safe_load((Path(__file__).resolve().parents[2] / "specs" / "tiny.yaml").read_text())


def run(out: Path, shard_dir: Path, model: dict, schedule: dict, parallel: dict | None = None, **extra) -> list[dict]:
    parallel = parallel or {"dp": 1, "micro_batch": 4, "precision": "fp32"}
    train(TrainSettings(ModelSpec.model_validate(model), ParallelSpec.model_validate(parallel),
                        ScheduleSpec.model_validate(schedule), out, shard_dir, **extra))
    return read_metrics(out / "metrics.jsonl")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("loop") / "shards")


@pytest.mark.slow  # trains, ~35 s
def test_tiny_spec_loss_falls(tmp_path):
    shard_dir = make_shards(tmp_path / "shards", vocab_size=TINY["model"]["vocab_size"], num_documents=200)
    schedule = {**TINY["schedule"], "steps": 30, "global_batch_size": 8, "seq_len": 64, "warmup_steps": 5,
                "eval_interval": 15, "checkpoint_interval": 15, "log_interval": 1}
    metrics = run(tmp_path / "out", shard_dir, TINY["model"], schedule, {**TINY["parallel"], "micro_batch": 8})
    losses = [r["loss"] for r in metrics if "loss" in r]
    assert len(losses) == 30
    # below the first step's loss and below the uniform guess ln(vocab) = 7.62
    assert sum(losses[-5:]) / 5 < min(losses[0], math.log(TINY["model"]["vocab_size"])) - 0.3, losses
    val = [r["val_loss"] for r in metrics if "val_loss" in r]
    assert len(val) == 2 and val[1] < val[0]


@pytest.mark.slow  # trains three times, ~3-4 s each
@pytest.mark.parametrize("recompute, policy", [("full", "matmuls"), ("selective", "matmuls"),
                                               ("selective", "alternate_matmuls")])
def test_recompute_gives_the_same_losses(tmp_path, shards, recompute, policy):
    schedule = tiny_schedule(steps=3, checkpoint_interval=3)
    plain = run(tmp_path / "plain", shards, tiny_model(), schedule)
    recomputed = run(tmp_path / recompute, shards, tiny_model(), schedule,
                     {"dp": 1, "micro_batch": 4, "precision": "fp32", "recompute": recompute,
                      "selective_policy": policy})
    for a, b in zip(plain, recomputed):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)


@pytest.mark.slow  # trains four times, ~6 s
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_loss_trains_like_the_full_logits(tmp_path, shards, precision):
    """`parallel.loss: chunked` in chunks of 24 tokens (5 chunks of a 4 x 32 micro-batch, the last one
    short) follows the full-logits loss curve; bf16 within bf16 rounding of the head's gradients."""
    schedule = tiny_schedule(steps=3, checkpoint_interval=3, eval_interval=3, eval_batches=1)
    parallel = {"dp": 1, "micro_batch": 4, "precision": precision}
    full = run(tmp_path / "full", shards, tiny_model(), schedule, {**parallel, "loss": "full"})
    chunked = run(tmp_path / "chunked", shards, tiny_model(), schedule,
                  {**parallel, "loss": "chunked", "loss_chunk_tokens": 24})
    rel = 1e-5 if precision == "fp32" else 2e-2
    for a, b in zip(full, chunked):
        assert b["loss"] == pytest.approx(a["loss"], rel=rel)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=rel)
    assert chunked[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], rel=rel)


@pytest.mark.slow  # trains twice, ~3 s
def test_bf16_tracks_fp32(tmp_path, shards):
    schedule = tiny_schedule(steps=3, checkpoint_interval=3)
    fp32 = run(tmp_path / "fp32", shards, tiny_model(), schedule)
    bf16 = run(tmp_path / "bf16", shards, tiny_model(), schedule, {"dp": 1, "micro_batch": 4, "precision": "bf16"})
    for a, b in zip(fp32, bf16):
        assert b["loss"] == pytest.approx(a["loss"], abs=0.05)
        assert b["loss"] != a["loss"]  # really computed in bf16


@pytest.mark.slow  # trains, ~3.5 s
def test_metrics_record_predictions_and_mfu(tmp_path, shards):
    predicted = {"step_s": 0.5, "peak_memory_gib": 1.5, "flops_per_token": 6 * 1e5, "peak_tflops": 1.0}
    metrics = run(tmp_path / "m", shards, tiny_model(), tiny_schedule(steps=2, checkpoint_interval=2), predicted=predicted)
    record = metrics[-1]
    assert record["predicted_step_s"] == 0.5 and record["predicted_peak_memory_gib"] == 1.5
    assert record["mfu"] == pytest.approx(6e5 * record["tokens_per_s"] / 1e12)
    assert record["peak_memory_gib"] > 0 and record["step_s"] > 0
    assert set(record) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s", "time"}


def test_layout_errors_spell_out_the_arithmetic(tmp_path, shards):
    with pytest.raises(ValueError, match=r"dp x tp x pp x cp = 2 x 1 x 1 x 1 = 2, but the cluster has 1 devices"):
        run(tmp_path / "bad", shards, tiny_model(), tiny_schedule(steps=1), {"dp": 2, "precision": "fp32"})
