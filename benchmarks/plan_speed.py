"""`specc plan` cost per example spec, process start included: median CPU time (user + sys of
the child process) of the text report, the JSON and a forced layout search, and the in-process
time of the 405B-on-16,384-GPU search. See validate_speed.py for how CPU time is measured and why.

Run: .venv/bin/python benchmarks/plan_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from validate_speed import SPECC, bytecode_note, medians

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEARCH_405B = ["plan", "specs/llama3-405b-h100x16k.yaml", "--search"]
SEARCH_TARGET_S = 0.5


def search_405b(runs: int) -> tuple[float, dict]:
    """In-process CPU time of building the 405B plan with a forced search (validation excluded)."""
    from specc.diagnostics.check import check_file
    from specc.plan import build_plan

    spec = check_file(ROOT / "specs" / "llama3-405b-h100x16k.yaml").spec
    samples, summary = [], {}
    for _ in range(runs):
        start = time.process_time()
        plan = build_plan(spec, force_search=True)
        samples.append(time.process_time() - start)
        summary = plan.model_dump()["search"]
    return statistics.median(samples), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"median CPU seconds of {args.runs} fresh processes; {bytecode_note()}")
    print(f"{'spec':32} {'plan':>7} {'--json':>7} {'--search':>9}")
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        rel = str(spec.relative_to(ROOT))
        cpu = [medians([str(SPECC), "plan", rel, *extra], args.runs)[0]
               for extra in ([], ["--json"], ["--json", "--search"])]
        print(f"{spec.stem:32} {cpu[0]:7.3f} {cpu[1]:7.3f} {cpu[2]:9.3f}")
    cpu, wall = medians([str(SPECC), *SEARCH_405B], args.runs)
    print(f"\nspecc {' '.join(SEARCH_405B)}: {cpu:.3f} CPU s, {wall:.3f} s wall (target < {SEARCH_TARGET_S} CPU s)")
    seconds, summary = search_405b(args.runs)
    print(f"405B on 16,384 H100 forced search, in process: {seconds:.3f} CPU s median ({summary})")


if __name__ == "__main__":
    main()
