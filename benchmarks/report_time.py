"""How long the HTML reports take to write: `specc report BUNDLE` and `specc plan --html`.

    .venv/bin/python benchmarks/report_time.py BUNDLE [--spec specs/llama3-8b-h100x8.yaml] [--repeats 5]

Times, in this process after one warm-up (matplotlib's import and font cache are paid once per
process, and printed separately), rendering the run report of BUNDLE and the plan report of
SPEC (planned once with `--search`); prints the median seconds and the page sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def timed(function, repeats: int) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        text = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--spec", type=Path, default=Path("specs/llama3-8b-h100x8.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    from specc.report import plan as plan_report
    from specc.report import run as run_report

    print(f"import (matplotlib included): {time.perf_counter() - started:.2f} s")
    from specc.diagnostics.check import check_file
    from specc.plan import build_plan, plan_json

    plan = json.loads(plan_json(build_plan(check_file(args.spec, []).spec, force_search=True, top=5)))
    started = time.perf_counter()
    run_report.render(args.bundle)
    print(f"first run report (font cache warm-up): {time.perf_counter() - started:.2f} s")
    seconds, text = timed(lambda: run_report.render(args.bundle), args.repeats)
    print(f"run report of {args.bundle.name}: median {seconds:.2f} s over {args.repeats}, {len(text) / 1e3:.0f} kB")
    seconds, text = timed(lambda: plan_report.render(plan), args.repeats)
    print(f"plan report of {args.spec.name}: median {seconds:.2f} s over {args.repeats}, {len(text) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
