"""Training speed of the tiny spec on CPU: tokens/s and step time (median over repeats), and
with `--layouts` every 4-process gloo layout's step time and its loss gap to one process.

    .venv/bin/python benchmarks/train_speed.py                 # single process, 3 repeats
    .venv/bin/python benchmarks/train_speed.py --layouts       # + FSDP, TP, PP, CP, EP on 4 ranks

Step times exclude the first steps (warm-up) and each run's checkpoint steps. Every process
runs one intra-op thread (torchrun's default), so "overhead" compares one rank against one
process, not 4 cores against 1. On a shared machine the figures move with the load (printed):
compare layouts measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from specc.runtime.shards import ShardWriter, write_meta  # noqa: E402

TINY = yaml.safe_load((ROOT / "specs" / "tiny.yaml").read_text())
WARMUP_STEPS = 3

LAYOUTS = {
    "fsdp4": {"dp": 4, "fsdp": True},
    "hsdp2x2": {"dp": 4, "fsdp": True, "hsdp_replicas": 2},
    "fsdp2_tp2_sp": {"dp": 2, "tp": 2, "sp": True, "fsdp": True},
    "pp2_1f1b_dp2": {"dp": 2, "pp": 2, "pp_schedule": "1f1b"},
    "cp2_dp2": {"dp": 2, "cp": 2, "fsdp": True},
    "moe_ep4": {"dp": 4, "ep": 4, "fsdp": True},
}


def make_shards(directory: Path, vocab: int, documents: int = 600, seed: int = 0) -> Path:
    """Noisy arithmetic progressions (the same generator as the tests)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", documents), ("validation", documents // 10)):
        writer = ShardWriter(directory, split, vocab, eos_id=vocab - 1, tokens_per_shard=200_000)
        for _ in range(count):
            start, stride, length = rng.integers(0, vocab - 1), rng.integers(1, 5), rng.integers(100, 400)
            tokens = (start + stride * np.arange(length)) % (vocab - 1)
            writer.add(tokens.tolist())
        splits[split] = writer.close()
    write_meta(directory, vocab, vocab - 1, splits)
    return directory


def case(name: str, steps: int, parallel: dict | None = None, moe: bool = False) -> dict:
    model = dict(TINY["model"])
    if moe:
        model["moe"] = {"num_experts": 4, "top_k": 2}
    if parallel and parallel.get("pp", 1) > 1:
        model["tie_embeddings"] = False  # the head and embedding live on different stages
    schedule = {**TINY["schedule"], "steps": steps, "checkpoint_interval": 10**6, "eval_interval": 0, "log_interval": 1}
    layout = {**TINY["parallel"], "micro_batch": 4, **(parallel or {})}
    return {"name": name, "model": model, "parallel": layout, "schedule": schedule}


def run_cases(cases: list[dict], root: Path, shard_dir: Path) -> None:
    """In this process (one rank) or, under torchrun, in each worker."""
    from specc.runtime.train.loop import TrainSettings, train
    from specc.spec.model import ModelSpec
    from specc.spec.parallel import ParallelSpec
    from specc.spec.schedule import ScheduleSpec

    for c in cases:
        train(TrainSettings(ModelSpec.model_validate(c["model"]), ParallelSpec.model_validate(c["parallel"]),
                            ScheduleSpec.model_validate(c["schedule"]), root / c["name"], shard_dir))


def summarize(metrics_file: Path) -> dict:
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    times = [r["step_s"] for r in records if "step_s" in r and r["step"] > WARMUP_STEPS]
    # the last step also writes the final checkpoint; leave it out
    times = times[:-1] or times
    return {"losses": losses, "step_s": statistics.median(times)}


def torchrun(cases: list[dict], root: Path, shard_dir: Path) -> None:
    (root / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=4",
               __file__, "--worker", str(root / "cases.json"), str(root), str(shard_dir)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", action="store_true", help="also time the 4-process gloo layouts")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch.distributed as dist

        run_cases(json.loads(Path(args.worker[0]).read_text()), Path(args.worker[1]), Path(args.worker[2]))
        dist.destroy_process_group()
        return

    tokens_per_step = TINY["schedule"]["global_batch_size"] * TINY["schedule"]["seq_len"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shard_dir = make_shards(root / "shards", TINY["model"]["vocab_size"])
        singles = []
        for repeat in range(args.repeats):
            name = f"single-{repeat}"
            run_cases([case(name, args.steps)], root, shard_dir)
            singles.append(summarize(root / name / "metrics.jsonl")["step_s"])
        single = statistics.median(singles)
        batch = f"{TINY['schedule']['global_batch_size']} x {TINY['schedule']['seq_len']} = {tokens_per_step} tokens/step"
        print(f"tiny spec, 1 process, 1 thread, CPU (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): "
              f"global batch {batch}")
        runs = ", ".join(f"{s * 1e3:.1f}" for s in singles)
        print(f"  step time median {single * 1e3:.1f} ms over {args.repeats} runs ({runs}) "
              f"-> {tokens_per_step / single:,.0f} tokens/s")
        if not args.layouts:
            return
        cases = [case(name, args.steps, parallel, moe=name.startswith("moe")) for name, parallel in LAYOUTS.items()]
        references, by_model = {}, {}
        for c in cases:  # single-process references with the same model and micro-batch
            key = json.dumps(c["model"], sort_keys=True)
            if key not in by_model:
                reference = {**c, "name": f"ref-{len(by_model)}", "parallel": {**TINY["parallel"], "micro_batch": 4}}
                run_cases([reference], root, shard_dir)
                by_model[key] = summarize(root / reference["name"] / "metrics.jsonl")
            references[c["name"]] = by_model[key]
        torchrun(cases, root, shard_dir)
        print(f"4 gloo processes, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(overhead = step time / 1-process step time of the same model):")
        for c in cases:
            measured, reference = summarize(root / c["name"] / "metrics.jsonl"), references[c["name"]]
            gap = max(abs(measured["losses"][s] - reference["losses"][s]) / abs(reference["losses"][s])
                      for s in reference["losses"])
            step_s = measured["step_s"]
            print(f"  {c['name']:<14} step {step_s * 1e3:7.1f} ms  {tokens_per_step / step_s:8,.0f} tokens/s  "
                  f"overhead x{step_s / reference['step_s']:.2f}  max rel loss gap {gap:.1e}")


if __name__ == "__main__":
    main()
