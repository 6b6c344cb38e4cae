"""Every precision runs as written or not at all: fp8 swaps the blocks' Linear layers for torchao
float8 matmuls (really `torch._scaled_mm` on fp8 operands; CPU torch executes it, so the numerics are
tested here) and tracks bf16; fp16 trains with dynamic loss scaling and skips overflowed steps; the
runtime refuses what the target cannot run (fp8 on a CPU or an A100) instead of falling back."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from train_helpers import make_shards, read_metrics, tiny_model, tiny_schedule

from specc.runtime.train import precision as prec
from specc.runtime.train.loop import TrainSettings, train
from specc.runtime.train.model import build_model
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec

STEPS = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("precision") / "shards")


def run(out: Path, shard_dir: Path, accelerator: str = "cpu", steps: int = STEPS, model: dict | None = None,
        **parallel) -> list[dict]:
    parallel = {"dp": 1, "micro_batch": 4, **parallel}
    train(TrainSettings(ModelSpec.model_validate(model or tiny_model()), ParallelSpec.model_validate(parallel),
                        ScheduleSpec.model_validate(tiny_schedule(steps=steps, checkpoint_interval=steps)),
                        out, shard_dir, accelerator=accelerator))
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.fixture
def fp8_on_cpu(monkeypatch):
    """Let the loop run fp8 on this CPU: torch executes `_scaled_mm` on CPU (no fp8 units, so no
    speed-up: validate and the runtime refuse fp8 there, see the tests below)."""
    monkeypatch.setattr(prec, "check_precision_runs", lambda precision, accelerator, device: None)


def test_fp8_converts_the_blocks_linears_and_leaves_the_head_and_router():
    from torchao.float8.float8_linear import Float8Linear

    model = build_model(ModelSpec.model_validate(tiny_model()), seed=0)
    converted = prec.apply_float8(model, "tensorwise", tp=1, fsdp_float8_all_gather=False)
    per_layer = ["attention.wq", "attention.wk", "attention.wv", "attention.wo",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]
    assert converted == [f"layers.{i}.{name}" for i in range(2) for name in per_layer]
    assert all(isinstance(model.get_submodule(name), Float8Linear) for name in converted)
    assert type(model.output) is torch.nn.Linear
    moe = build_model(ModelSpec.model_validate(tiny_model(moe={"num_experts": 4, "top_k": 2, "num_shared_experts": 1})), 0)
    converted = prec.apply_float8(moe, "rowwise", tp=1, fsdp_float8_all_gather=False)
    assert "layers.0.feed_forward.shared_experts.w1" in converted
    assert type(moe.layers["0"].feed_forward.router) is torch.nn.Linear
    # 48 (hidden) % 16 == 0 but 40 (ffn) is not: the FFN stays bf16, attention converts
    narrow = build_model(ModelSpec.model_validate(tiny_model(hidden_size=48, num_heads=3, num_kv_heads=1,
                                                             ffn_hidden_size=40)), 0)
    assert not [n for n in prec.apply_float8(narrow, "tensorwise", 1, False) if "feed_forward" in n]


def test_fp8_matmuls_run_on_fp8_operands(monkeypatch):
    """Every converted Linear's three GEMMs (output, grad_input, grad_weight) are `torch._scaled_mm`
    calls on float8 tensors; the forward loss stays within 1% of bf16's."""
    spec = ModelSpec.model_validate(tiny_model())
    calls: list[tuple[torch.dtype, torch.dtype]] = []
    scaled_mm = torch._scaled_mm

    @functools.wraps(scaled_mm)
    def counting(a, b, *args, **kwargs):
        calls.append((a.dtype, b.dtype))
        return scaled_mm(a, b, *args, **kwargs)

    tokens = torch.randint(0, 255, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = {}
    for recipe in ("bf16", "tensorwise", "rowwise"):
        model = build_model(spec, seed=0)
        converted = [] if recipe == "bf16" else prec.apply_float8(model, recipe, 1, False)
        monkeypatch.setattr(torch, "_scaled_mm", counting)
        calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
        assert len(calls) == 3 * len(converted), recipe
        assert all(a in (torch.float8_e4m3fn, torch.float8_e5m2) and b in (torch.float8_e4m3fn, torch.float8_e5m2)
                   for a, b in calls)
        losses[recipe] = loss.item()
    for recipe in ("tensorwise", "rowwise"):
        assert losses[recipe] == pytest.approx(losses["bf16"], rel=0.01)
        assert losses[recipe] != losses["bf16"]


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_fp8_training_tracks_bf16(tmp_path, shards, fp8_on_cpu, recipe):
    bf16 = run(tmp_path / "bf16", shards, precision="bf16")
    fp8 = run(tmp_path / recipe, shards, precision="fp8", fp8_recipe=recipe)
    for a, b in zip(bf16, fp8):
        assert b["loss"] == pytest.approx(a["loss"], abs=0.02)
    assert [r["loss"] for r in fp8] != [r["loss"] for r in bf16]  # really a different computation


@pytest.mark.parametrize("accelerator, message", [
    ("cpu", r"precision fp8 does not run on Generic x86-64 CPU .*: specc's pretrain runtime trains in bf16, fp16, fp32"),
    ("a100-80gb", r"precision fp8 does not run on A100-SXM4-80GB"),
    ("h100-sxm", r"precision fp8 cannot run in this process: fp8 training needs fp8 tensor cores .* runs on cpu"),
])
def test_runtime_refuses_fp8_where_it_cannot_run(tmp_path, shards, accelerator, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "refused", shards, accelerator=accelerator, precision="fp8")
    assert not (tmp_path / "refused" / "metrics.jsonl").exists()


def test_fp16_trains_with_a_loss_scale(tmp_path, shards):
    fp32 = run(tmp_path / "fp32", shards, precision="fp32")
    fp16 = run(tmp_path / "fp16", shards, precision="fp16")
    for a, b in zip(fp32, fp16):
        assert b["loss"] == pytest.approx(a["loss"], abs=0.05)
        assert b["loss_scale"] == 2.0**16 and b["skipped_steps"] == 0
    assert [r["loss"] for r in fp16] != [r["loss"] for r in fp32]  # really computed in fp16


def test_fp16_overflow_skips_the_update_and_halves_the_scale(tmp_path, shards, monkeypatch):
    """A scale of 2^24 overflows fp16 gradients (2^21 fits here): those steps
    update nothing (not even the lr schedule) and halve the scale until the gradients fit."""
    monkeypatch.setattr(prec, "LossScaler", functools.partial(prec.LossScaler, scale=2.0**24))
    records = run(tmp_path / "fp16", shards, steps=8, precision="fp16")
    skipped = records[-1]["skipped_steps"]
    assert 0 < skipped < 7
    assert records[-1]["loss_scale"] == 2.0**24 / 2**skipped
    assert all(math.isfinite(r["loss"]) for r in records)
    overflowed = [r for r in records if not math.isfinite(r["grad_norm"])]
    assert len(overflowed) == skipped and overflowed[-1]["step"] == skipped
    assert all(r["lr"] == records[0]["lr"] for r in overflowed)  # the warm-up did not advance
    assert records[skipped]["lr"] == records[0]["lr"] and records[skipped + 1]["lr"] > records[0]["lr"]


def test_fp16_loss_scale_survives_a_resume(tmp_path, shards, monkeypatch):
    monkeypatch.setattr(prec, "LossScaler", functools.partial(prec.LossScaler, scale=2.0**24))
    out = tmp_path / "fp16"
    parallel = ParallelSpec.model_validate({"dp": 1, "micro_batch": 4, "precision": "fp16"})
    schedule = ScheduleSpec.model_validate(tiny_schedule(steps=6, checkpoint_interval=1))
    train(TrainSettings(ModelSpec.model_validate(tiny_model()), parallel, schedule, out, shards, max_steps=2))
    before = read_metrics(out / "metrics.jsonl")[-1]["loss_scale"]
    train(TrainSettings(ModelSpec.model_validate(tiny_model()), parallel, schedule, out, shards))
    resumed = [r for r in read_metrics(out / "metrics.jsonl") if r["step"] == 3][0]
    assert before == 2.0**22 and resumed["loss_scale"] <= before


def test_loss_scaler_grows_after_clean_steps():
    scaler = prec.LossScaler(scale=8.0, growth_interval=3)
    assert [scaler.update(1.0) for _ in range(3)] == [True] * 3 and scaler.scale == 16.0
    assert scaler.update(float("inf")) is False and scaler.scale == 8.0 and scaler.good_steps == 0
    assert scaler.update(float("nan")) is False and scaler.skipped_steps == 2


# ---------------------------------------------------------------- under FSDP, TP and pipelining

LAYOUT_CASES = [
    # name, parallel layout on 2 ranks
    ("fp8_fsdp_tensorwise", {"precision": "fp8", "fsdp": True}),
    ("fp8_tp_sp_rowwise", {"precision": "fp8", "fp8_recipe": "rowwise", "tp": 2, "sp": True}),
    ("fp8_pp", {"precision": "fp8", "pp": 2}),
    ("fp16_fsdp", {"precision": "fp16", "fsdp": True}),
    ("fp16_tp", {"precision": "fp16", "tp": 2}),
    ("fp16_pp", {"precision": "fp16", "pp": 2}),
    ("bf16_pp", {"precision": "bf16", "pp": 2}),
    ("fp32_pp", {"precision": "fp32", "pp": 2}),
]


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory, shards) -> Path:
    import json
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    tmp = tmp_path_factory.mktemp("precision-layouts")
    schedule = tiny_schedule(steps=STEPS, checkpoint_interval=STEPS)
    cases = [{"name": n, "model": tiny_model(), "parallel": {"micro_batch": 2, **p}, "schedule": schedule}
             for n, p in LAYOUT_CASES]
    (tmp / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(here.parents[1]), env.get("PYTHONPATH", "")])
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(here / "precision_dist_worker.py"),
                             str(tmp / "cases.json"), str(tmp), str(shards)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return tmp


@pytest.fixture(scope="module")
def fp32_reference(tmp_path_factory, shards) -> list[dict]:
    return run(tmp_path_factory.mktemp("fp32-reference") / "out", shards, precision="fp32", micro_batch=2)


@pytest.mark.slow  # torchrun, two processes
@pytest.mark.parametrize("name", [name for name, _ in LAYOUT_CASES])
def test_precision_runs_under_every_layout(layout_runs, fp32_reference, name):
    records = [r for r in read_metrics(layout_runs / name / "metrics.jsonl") if "loss" in r]
    assert len(records) == STEPS
    for reference, record in zip(fp32_reference, records):
        assert record["loss"] == pytest.approx(reference["loss"], abs=0.03), name
    if name.startswith("fp16"):
        assert records[-1]["loss_scale"] == 2.0**16 and records[-1]["skipped_steps"] == 0


@pytest.mark.slow  # torchrun, two processes
def test_fp8_under_fsdp_gathers_weights_in_fp8(layout_runs):
    import json

    facts = json.loads((layout_runs / "facts.json").read_text())
    assert facts["fp8_fsdp_tensorwise"]["weight_class"] == "WeightWithDynamicFloat8CastTensor"
    assert facts["fp8_tp_sp_rowwise"]["weight_class"] == "Tensor"  # rowwise: gathered in bf16


@pytest.mark.slow  # torchrun, two processes
def test_pipelined_bf16_really_autocasts(layout_runs):
    """Under pipelining without data parallelism nothing else casts: the schedule runs in autocast."""
    bf16, fp32 = (read_metrics(layout_runs / name / "metrics.jsonl") for name in ("bf16_pp", "fp32_pp"))
    assert [r["loss"] for r in bf16 if "loss" in r] != [r["loss"] for r in fp32 if "loss" in r]
