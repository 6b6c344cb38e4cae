"""Experiment tracking: metrics records mirrored to TensorBoard event files, read back with
TensorBoard's own reader; and the spec section that turns it on for the right stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specc.runtime import tracking
from specc.runtime.io import MetricsWriter

ROOT = Path(__file__).resolve().parents[2]


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture
def stage(tmp_path):
    """A bundle-shaped directory: bundle/stages/03-pretrain/config.json and runs/tiny/pretrain/."""
    bundle = tmp_path / "bundle"
    (bundle / "stages" / "03-pretrain").mkdir(parents=True)
    (bundle / "spec.resolved.yaml").write_text("name: tiny\nschedule:\n  lr: 0.003\n")
    run_dir = tmp_path / "runs" / "tiny"
    config = {"stage": "pretrain", "run_dir": str(run_dir), "params": {},
              "tracking": {"tensorboard": True, "run_name": "tiny-exp", "log_dir": "tensorboard/pretrain",
                           "stage_dir": "pretrain"}}
    path = bundle / "stages" / "03-pretrain" / "config.json"
    path.write_text(json.dumps(config))
    tracking.configure(config, path)
    yield run_dir
    tracking.configure({}, path)


def test_metrics_records_reach_tensorboard_and_read_back(stage):
    with MetricsWriter(stage / "pretrain" / "metrics.jsonl") as metrics:
        metrics.write(event="start", total_steps=3)
        for step, loss in ((1, 7.5), (2, 6.25), (3, 5.0)):
            metrics.write(step=step, loss=loss, lr=1e-3 * step, grad_norm=0.5, tokens_per_s=1000.0 + step,
                          mfu=0.25, peak_memory_gib=0.75, step_s=0.1, layout={"dp": 1})
        metrics.write(step=3, val_loss=5.5)
        metrics.write(model="pretrain", task="arith", metric="acc", value=0.5, stderr=0.1, count=20)
    events = read_events(stage / "tensorboard" / "pretrain")
    tags = set(events.Tags()["scalars"])
    assert {"loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_memory_gib", "step_s",
            "eval/pretrain/arith/acc", "eval/pretrain/arith/acc/stderr"} <= tags
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 7.5), (2, 6.25), (3, 5.0)]
    assert [e.value for e in events.Scalars("val_loss")] == [5.5]
    assert events.Scalars("eval/pretrain/arith/acc")[0].value == 0.5
    texts = set(events.Tags()["tensors"])
    assert {"run_name/text_summary", "spec/text_summary", "stage_config/text_summary"} <= texts
    run_name = events.Tensors("run_name/text_summary")[0].tensor_proto.string_val[0].decode()
    assert run_name == "tiny-exp"
    assert "lr: 0.003" in events.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()


def test_only_the_stage_own_metrics_file_is_tracked_and_events_only_writers_leave_no_file(stage):
    with MetricsWriter(stage / "pretrain" / "metrics.jsonl") as metrics:
        metrics.write(event="start", total_steps=3)  # nothing plotted: no event file
    with MetricsWriter(stage / "pretrain" / "draft-training" / "metrics.jsonl") as metrics:
        metrics.write(step=1, loss=1.0)  # scratch metrics of another loop: not tracked
    assert not (stage / "tensorboard").exists()


def test_scalars_of_records():
    assert tracking.scalars({"step": 2, "loss": 1.5, "time": 5.0, "ok": True, "bad": float("nan")}) == (2, {"loss": 1.5})
    assert tracking.scalars({"event": "part", "step": 1, "documents_in": 5}) == (0, {})
    step, values = tracking.scalars({"model": "sft", "task": "ppl", "metric": "perplexity", "value": 9.0,
                                     "stderr": None, "count": 10})
    assert (step, values) == (0, {"eval/sft/ppl/perplexity": 9.0})


def test_emitted_configs_track_training_alignment_and_eval_only():
    from specc.diagnostics.check import check_file
    from specc.emit.stages import build_stages
    from specc.plan import build_plan, plan_json

    spec = check_file(ROOT / "specs" / "tiny.yaml", []).spec
    plan = json.loads(plan_json(build_plan(spec)))
    tracked = {stage.name: stage.config_file("../runs/tiny").get("tracking") for stage in build_stages(spec, plan, str(ROOT))}
    assert {name for name, block in tracked.items() if block} == {"pretrain", "sft", "rm", "dpo", "ppo", "eval"}
    assert tracked["sft"] == {"tensorboard": True, "run_name": "tiny", "log_dir": "tensorboard/sft", "stage_dir": "sft"}
    off = check_file(ROOT / "specs" / "tiny.yaml", ["+tracking.tensorboard=false", "+tracking.run_name=x"]).spec
    assert not any(stage.tracking for stage in build_stages(off, plan, str(ROOT)))
