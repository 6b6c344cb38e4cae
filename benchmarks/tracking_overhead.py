"""What TensorBoard tracking costs a training step: the tiny pretrain stage with and without it.

    .venv/bin/python benchmarks/tracking_overhead.py RUN_DIR [--steps 30] [--runs 3]

RUN_DIR is a run directory whose tokenize stage finished (e.g. `bundles/runs/tiny` after
`scripts/run-tiny.sh`); its shards and its bundle's pretrain config are reused. Each run trains
`--steps` steps logging every step (the worst case: TensorBoard gets a record per step, where the
default logs every `log_interval` steps) once with tracking off and once on, alternating so that
machine load hits both alike. Prints per run the median step time (first step excluded: warm-up)
of each and their ratio, then the median ratio over the runs. First, the cost per record in
isolation: `MetricsWriter.write` of a training record with and without the TensorBoard sink
(median over 5 repeats of 2,000 records), which bounds the overhead on a busy machine where
step times are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def pretrain_config(run_dir: Path) -> dict:
    """The pretrain config of the bundle that made `run_dir` (the newest bundle next to it)."""
    bundles = sorted(run_dir.parent.parent.glob("*/stages/*-pretrain/config.json"), key=lambda p: p.stat().st_mtime)
    if not bundles:
        sys.exit(f"no bundle with a pretrain stage next to {run_dir}")
    return json.loads(bundles[-1].read_text())


def run_once(config: dict, run_dir: Path, shards: Path, steps: int, tracked: bool) -> float:
    """Median seconds per step (step 1 excluded) of one pretrain run."""
    params = json.loads(json.dumps(config["params"]))
    params["shard_dir"] = str(shards)
    params["schedule"].update(steps=steps, log_interval=1, eval_interval=steps, checkpoint_interval=steps,
                              warmup_steps=2)
    staged = {"stage": "pretrain", "run_dir": str(run_dir), "params": params}
    if tracked:
        staged["tracking"] = {"tensorboard": True, "run_name": "overhead", "log_dir": "tensorboard/pretrain",
                              "stage_dir": "pretrain"}
    path = run_dir / "stages" / "03-pretrain" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(staged))
    subprocess.run([sys.executable, "-m", "specc.runtime", str(path)], check=True, capture_output=True)
    records = [json.loads(line) for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    if tracked:
        assert (run_dir / "tensorboard" / "pretrain").is_dir(), "tracking wrote no event files"
    return statistics.median(r["step_s"] for r in records if "step_s" in r and r["step"] > 1)


def write_cost(tracked: bool, records: int = 2000, repeats: int = 5) -> float:
    """Median seconds per `MetricsWriter.write` of a pretrain-like record."""
    from specc.runtime import tracking
    from specc.runtime.io import MetricsWriter

    times = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            config = {"stage": "pretrain", "run_dir": str(root), "params": {}}
            if tracked:
                config["tracking"] = {"tensorboard": True, "run_name": "cost", "log_dir": "tb", "stage_dir": "pretrain"}
            (root / "b" / "stages" / "x").mkdir(parents=True)
            tracking.configure(config, root / "b" / "stages" / "x" / "config.json")
            with MetricsWriter(root / "pretrain" / "metrics.jsonl") as metrics:
                metrics.write(step=0, loss=1.0)  # opens the event file outside the timing
                started = time.perf_counter()
                for step in range(1, records + 1):
                    metrics.write(step=step, loss=1.0 / step, lr=1e-3, grad_norm=0.5, step_s=0.07, tokens_per_s=3e4,
                                  peak_memory_gib=0.7, mfu=0.25, predicted_step_s=0.07, predicted_peak_memory_gib=0.77)
                times.append((time.perf_counter() - started) / records)
            tracking.configure({}, root)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    plain, tracked = write_cost(False), write_cost(True)
    print(f"MetricsWriter.write: {plain * 1e6:.1f} us untracked, {tracked * 1e6:.1f} us with TensorBoard "
          f"(+{(tracked - plain) * 1e6:.1f} us per logged record)", flush=True)
    config = pretrain_config(args.run_dir.resolve())
    shards = (args.run_dir / "tokenize" / "shards").resolve()
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.runs):
            order = (False, True) if index % 2 == 0 else (True, False)
            times = {tracked: run_once(config, Path(scratch) / f"{index}-{tracked}", shards, args.steps, tracked)
                     for tracked in order}
            ratios.append(times[True] / times[False])
            print(f"run {index + 1}: step {times[False] * 1e3:.1f} ms untracked, {times[True] * 1e3:.1f} ms tracked, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"median ratio tracked/untracked over {args.runs} runs of {args.steps} steps: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
