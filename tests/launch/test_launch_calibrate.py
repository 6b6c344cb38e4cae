"""`specc calibrate`: fit a cluster profile from a published table and from the tiny run's own
measurements; plans made with the profile print its error bars."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from specc.cli import main
from specc.plan import calibrate as cal

LLAMA_8B = ROOT / "specs" / "llama3-8b-h100x8.yaml"

# torchtitan Llama 3.1 8B on H100 (96 GB HBM2e, 500 W), seq 8192, per-op selective recompute
# (torchtitan docs/performance.md and the async-TP benchmark, 2024-12 / 2025-06; the rows of
# benchmarks/data/published_runs.json): step = global batch x 8192 / (tokens/s per GPU x GPUs).
TORCHTITAN_H100 = ["+cluster.accelerator_overrides.memory_gb=96", "+cluster.accelerator_overrides.memory_bw_tbps=2.4",
                   "+parallel.selective_policy=alternate_matmuls", "~schedule.global_batch_tokens"]
TABLE = [  # (name, overrides, tokens/s per GPU, GPUs, global batch)
    ("fsdp-128", ["cluster.nodes=16", "parallel.micro_batch=2", "+schedule.global_batch_size=256"], 5605, 128, 256),
    ("fsdp-compile-128", ["cluster.nodes=16", "parallel.micro_batch=2", "+schedule.global_batch_size=256",
                          "+parallel.compile=true"], 6514, 128, 256),
    ("fsdp-compile-fp8-128", ["cluster.nodes=16", "parallel.micro_batch=2", "+schedule.global_batch_size=256",
                              "+parallel.compile=true", "parallel.precision=fp8"], 8380, 128, 256),
    ("tp8-fsdp8-64", ["cluster.nodes=8", "+parallel.tp=8", "+parallel.sp=true", "parallel.micro_batch=12",
                      "+schedule.global_batch_size=96", "+parallel.compile=true"], 4378, 64, 96),
]


def _write_table(path) -> None:
    lines = ["name,spec,measured_step_s,overrides"]
    for name, overrides, tokens, gpus, batch in TABLE:
        step = batch * 8192 / (tokens * gpus)
        lines.append(f"{name},{LLAMA_8B},{step:.6f},{';'.join(TORCHTITAN_H100 + overrides)}")
    path.write_text("\n".join(lines) + "\n")


def test_calibrates_on_a_published_table_and_the_plan_prints_the_profile(tmp_path, capsys):
    table = tmp_path / "torchtitan.csv"
    _write_table(table)
    profile = tmp_path / "h100.profile.yaml"
    assert main(["calibrate", str(table), "-o", str(profile), "--name", "torchtitan-h100"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-run-out" in out and "before" in out
    runs = cal.runs_from_table(table)
    result = cal.calibrate(runs)
    before, after = (cal._abs_pct(result.errors(w))[0] for w in ("before", "after"))
    assert after <= before
    assert len([e for e in result.errors("held_out")]) == 4
    written = profile.read_text()
    assert "cluster:" in written and "torchtitan-h100" in written and "leave-one-run-out" in written

    spec = tmp_path / "calibrated.yaml"
    spec.write_text(f"extends: [{LLAMA_8B}, {profile.name}]\n")
    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["error_bars"]["profile"]["name"] == "torchtitan-h100"
    assert main(["plan", str(LLAMA_8B), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    scale = plan["error_bars"]["profile"]["compute_scale"]
    assert plan["time"]["breakdown_s"]["compute"] == pytest.approx(plain["time"]["breakdown_s"]["compute"] * scale, rel=1e-4)
    assert main(["plan", str(spec)]) == 0
    assert "calibrated with profile `torchtitan-h100`" in capsys.readouterr().out
    assert main(["validate", str(spec), "--set", "cluster.accelerator=a100-80gb"]) == 1
    assert "R253" in capsys.readouterr().out


def test_fit_recovers_known_scales():
    """Runs whose measured time is exactly 1.3 x compute + 0.6 x communication give back 1.3 and 0.6."""
    runs = [cal.Run(f"r{i}", "h100-sxm", c, m, 1.3 * c + 0.6 * m) for i, (c, m) in
            enumerate([(1.0, 0.2), (2.0, 1.0), (0.5, 0.4), (3.0, 0.1)])]
    a, b = cal.fit(runs)
    assert a == pytest.approx(1.3) and b == pytest.approx(0.6)
    assert cal.fit(runs[:2]) == (pytest.approx(cal.fit(runs[:2])[0]), 1.0)  # two runs: compute scale only


@pytest.mark.parametrize("content, message", [
    ("spec,overrides\nx.yaml,\n", "missing column(s) measured_step_s"),
    ("spec,measured_step_s\nnope.yaml,abc\n", ":2: measured_step_s 'abc' is not a number"),
    ("spec,measured_step_s\nnope.yaml,1.5\n", ":2: nope.yaml is invalid"),
    ("spec,measured_step_s\nnope.yaml,nan\n", ":2: measured_step_s must be a positive finite number"),
    ("spec,measured_step_s\nnope.yaml,inf\n", ":2: measured_step_s must be a positive finite number"),
    ("spec,measured_step_s\nnope.yaml,1.5,extra\n", ":2: 3 fields, the header has 2"),
    ("", "t.csv: empty; a table starts with the header"),
    (b"\x82\xff\x00binary", "t.csv: not UTF-8 text"),
])
def test_bad_tables_are_located_errors(tmp_path, capsys, content, message):
    table = tmp_path / "t.csv"
    table.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["calibrate", str(table)]) == 1
    assert message in capsys.readouterr().err


def test_a_bundle_that_never_ran_is_refused(tmp_path, capsys):
    from launch_helpers import FAST_TRAINING, TINY, emit

    bundle = emit(TINY, tmp_path, FAST_TRAINING)
    assert main(["calibrate", str(bundle)]) == 1
    assert "has not run" in capsys.readouterr().err


def test_a_damaged_bundle_or_unusable_measurements_are_errors_not_tracebacks(tmp_path, capsys):
    """plan.json and manifest.json are read back through specc.launch.readback (B-codes); a
    metrics.jsonl whose step_s are NaN/Infinity and a plan whose breakdown is not seconds are
    refused before the fit divides by them."""
    from launch_helpers import FAST_TRAINING, TINY, emit

    from specc.launch.launcher import read_stages

    bundle = emit(TINY, tmp_path, FAST_TRAINING)
    stage = next(s for s in read_stages(bundle) if s.config["stage"] == "pretrain")
    stage.outputs(bundle).mkdir(parents=True, exist_ok=True)
    metrics = stage.outputs(bundle) / "metrics.jsonl"
    metrics.write_text('{"step": 1, "step_s": NaN}\n{"step": 2, "step_s": Infinity}\n')
    assert main(["calibrate", str(bundle)]) == 1
    assert "no measured step_s" in capsys.readouterr().err
    metrics.write_text('{"step": 1, "step_s": 1.0}\n{"step": 2, "step_s": 1.2}\n')
    plan = json.loads((bundle / "plan.json").read_text())
    plan["time"]["breakdown_s"] = {"compute": "fast"}
    (bundle / "plan.json").write_text(json.dumps(plan))
    assert main(["calibrate", str(bundle)]) == 1
    assert "time.breakdown_s holds compute: 'fast', not finite seconds" in capsys.readouterr().err
    (bundle / "plan.json").write_text("{truncated")
    assert main(["calibrate", str(bundle)]) == 1
    assert "plan.json: not valid JSON" in capsys.readouterr().err
    (bundle / "manifest.json").unlink()
    (bundle / "plan.json").write_text(json.dumps(plan))
    assert main(["calibrate", str(bundle)]) == 1
    assert "manifest.json: missing [B001]" in capsys.readouterr().err


def _train_pretrain_stage(bundle, shards) -> None:
    """Run the bundle's pretrain stage's own training loop (its config) on `shards`, in this process:
    real measured steps of the tiny model on this machine, written where calibrate reads them."""
    import dataclasses

    from specc.launch.launcher import read_stages
    from specc.runtime.train.loop import train
    from specc.runtime.train.stage import settings_from_config

    stage = next(s for s in read_stages(bundle) if s.config["stage"] == "pretrain")
    settings = settings_from_config(stage.config)
    train(dataclasses.replace(settings, out_dir=stage.outputs(bundle), shard_dir=shards))


def _make_shards(directory, vocab_size: int):
    """Random token documents in the tokenize stage's shard format (the tiny model only needs tokens)."""
    import numpy as np

    from specc.runtime.shards import ShardWriter, write_meta

    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", 200), ("validation", 20)):
        writer = ShardWriter(directory, split, vocab_size, eos_id=vocab_size - 1, tokens_per_shard=4000)
        for _ in range(count):
            writer.add(rng.integers(0, vocab_size - 1, int(rng.integers(60, 200))).tolist())
        splits[split] = writer.close()
    write_meta(directory, vocab_size, vocab_size - 1, splits)
    return directory


@pytest.mark.slow
def test_calibrates_on_the_tiny_runs_own_measurements(tmp_path, capsys):
    """Two tiny runs (micro-batch 2 and 4) trained for real on this machine by their pretrain stage's
    loop: their metrics.jsonl step times against their plans; the profile moves the planned step time
    towards the measured one, and the held-out error is reported."""
    from launch_helpers import SHORT_RUN, TINY, emit

    from specc.diagnostics.check import check_file

    vocab = check_file(TINY).spec.model.vocab_size
    shards = _make_shards(tmp_path / "shards", vocab)
    bundles = []
    for micro in (2, 4):
        bundle = emit(TINY, tmp_path / f"mb{micro}", [*SHORT_RUN, "schedule.steps=6", f"parallel.micro_batch={micro}"])
        _train_pretrain_stage(bundle, shards)
        bundles.append(bundle)
    runs = [cal.run_from_bundle(b) for b in bundles]
    assert all(r.measured_s > 0 and r.compute_s > 0 for r in runs)
    result = cal.calibrate(runs)
    assert cal._abs_pct(result.errors("after"))[0] <= cal._abs_pct(result.errors("before"))[0] + 1e-9
    assert main(["calibrate", *map(str, bundles), "-o", str(tmp_path / "cpu.yaml")]) == 0
    out = capsys.readouterr().out
    assert "leave-one-run-out" in out and "compute_scale" in (tmp_path / "cpu.yaml").read_text()
