"""What the training lifecycle costs per step: the tiny spec's pretraining on CPU, timed by the
step alone (`step_s`: data, forward, backward, optimizer) and by the whole loop iteration (the
gap between consecutive metrics lines: the step plus records, metrics.jsonl, the cross-rank
agreement and the checkpoint decision). Their ratio is the loop's overhead over the step.

    .venv/bin/python benchmarks/lifecycle_overhead.py                        # this checkout
    .venv/bin/python benchmarks/lifecycle_overhead.py --tree ../main --tree .  # before / after

Each run is a fresh process (one intra-op thread) with a metrics line every step and no
checkpoint before the last step; the runs of the trees alternate (ABBA), so that load on a
shared machine falls on both alike. Figures are medians over the steps after warm-up (the first and
the last step, which saves the checkpoint, left out), then medians over the runs.
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
WARMUP_STEPS = 3


def worker(tree: Path, out: Path, shard_dir: Path, steps: int) -> None:
    """Train the tiny spec with the runtime of `tree` (run in a fresh process)."""
    sys.path.insert(0, str(tree))
    from specc.runtime.train.loop import TrainSettings, train
    from specc.spec.model import ModelSpec
    from specc.spec.parallel import ParallelSpec
    from specc.spec.schedule import ScheduleSpec

    tiny = yaml.safe_load((tree / "specs" / "tiny.yaml").read_text())
    schedule = {**tiny["schedule"], "steps": steps, "checkpoint_interval": 10**6, "eval_interval": 0,
                "log_interval": 1}
    train(TrainSettings(ModelSpec.model_validate(tiny["model"]),
                        ParallelSpec.model_validate({**tiny["parallel"], "micro_batch": 4}),
                        ScheduleSpec.model_validate(schedule), out, shard_dir))


def measure(tree: Path, out: Path, shard_dir: Path, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run([sys.executable, __file__, "--worker", str(tree), str(out), str(shard_dir), str(steps)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "step_s" in r]
    times = {r["step"]: r["time"] for r in records}
    kept = [r for r in records if WARMUP_STEPS < r["step"] < steps]
    step_s = statistics.median(r["step_s"] for r in kept)
    # the gap before step n's line is step n's whole iteration (metrics times are rounded to 1 ms)
    period = statistics.median(times[r["step"]] - times[r["step"] - 1] for r in kept)
    return {"step_s": step_s, "period_s": period, "ratio": period / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a specc checkout to time (repeatable)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tree, out, shard_dir, steps = args.worker
        worker(Path(tree).resolve(), Path(out), Path(shard_dir), int(steps))
        return
    trees = [t.resolve() for t in args.tree or [ROOT]]
    tiny = yaml.safe_load((ROOT / "specs" / "tiny.yaml").read_text())
    results: dict[Path, list[dict]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from train_speed import make_shards  # imported here: the workers must import specc from their tree

        shard_dir = make_shards(root / "shards", tiny["model"]["vocab_size"], documents=400)
        for repeat in range(args.repeats):
            # the order alternates (ABBA...), so that a trend in the machine's load favours neither tree
            for index, tree in enumerate(trees if repeat % 2 == 0 else trees[::-1]):
                results[tree].append(measure(tree, root / f"run-{repeat}-{index}", shard_dir, args.steps))
    print(f"tiny spec pretraining, 1 process, 1 thread, CPU, {args.steps} steps a run, {args.repeats} runs a tree "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for tree, runs in results.items():
        ratios = ", ".join(f"{r['ratio']:.4f}" for r in runs)
        step_ms = ", ".join(f"{r['step_s'] * 1e3:.0f}" for r in runs)
        overhead = statistics.median(r["period_s"] - r["step_s"] for r in runs)
        print(f"  {tree}: step {statistics.median(r['step_s'] for r in runs) * 1e3:.1f} ms, loop iteration "
              f"{statistics.median(r['period_s'] for r in runs) * 1e3:.1f} ms (+{overhead * 1e3:.2f} ms), "
              f"iteration/step median {statistics.median(r['ratio'] for r in runs):.4f} ({ratios}); "
              f"step ms by run {step_ms}")
    if len(trees) == 2:
        before, after = (statistics.median(r["period_s"] for r in results[tree]) for tree in trees)
        print(f"  loop iteration {trees[1].name} / {trees[0].name}: {after / before:.3f} (ratio of the medians)")


if __name__ == "__main__":
    main()
