"""Median wall time of `specc plan` per example spec, process start included (text report, JSON,
and a forced layout search), and the in-process time of the 405B-on-16,384-GPU search (target < 1 s).

Run: .venv/bin/python benchmarks/plan_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECC = Path(sys.executable).with_name("specc")
sys.path.insert(0, str(ROOT))


def wall(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([str(SPECC), *argv], capture_output=True, text=True, cwd=ROOT)
        samples.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"specc {' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return statistics.median(samples)


def search_405b(runs: int) -> tuple[float, dict]:
    """In-process: build the plan of the 405B spec with a forced search (validation excluded)."""
    from specc.diagnostics.check import check_file
    from specc.plan import build_plan

    spec = check_file(ROOT / "specs" / "llama3-405b-h100x16k.yaml").spec
    samples, summary = [], {}
    for _ in range(runs):
        start = time.perf_counter()
        plan = build_plan(spec, force_search=True)
        samples.append(time.perf_counter() - start)
        summary = plan.model_dump()["search"]
    return statistics.median(samples), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"median of {args.runs} runs, process start included (seconds)")
    print(f"{'spec':32} {'plan':>7} {'--json':>7} {'--search':>9}")
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        rel = str(spec.relative_to(ROOT))
        print(f"{spec.stem:32} {wall(['plan', rel], args.runs):7.3f} {wall(['plan', rel, '--json'], args.runs):7.3f} "
              f"{wall(['plan', rel, '--json', '--search'], args.runs):9.3f}")
    seconds, summary = search_405b(args.runs)
    print(f"\n405B on 16,384 H100 forced search, in process: {seconds:.3f} s median ({summary})")


if __name__ == "__main__":
    main()
