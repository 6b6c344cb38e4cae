"""Median wall time of `specc validate` per example spec, process start included, and
proof that the validate path never imports torch.

Run: .venv/bin/python benchmarks/validate_speed.py [--runs 7]
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


def time_validate(spec: Path, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([str(SPECC), "validate", str(spec)], capture_output=True, text=True, cwd=ROOT)
        samples.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{spec} did not validate:\n{result.stdout}{result.stderr}")
    return samples


def torch_imported_by_validate() -> bool:
    code = ("import sys; from specc.cli import main; main(['validate', 'specs/tiny.yaml']);"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip().splitlines()[-1] == "True"


def import_time_of_cli() -> float:
    """Median in-process import time of the validate path (no interpreter start)."""
    code = ("import time; t = time.perf_counter(); import specc.cli, specc.diagnostics.check; "
            "print(time.perf_counter() - t)")
    samples = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    cwd=ROOT).stdout) for _ in range(5)]
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    baseline = statistics.median(
        _time([sys.executable, "-c", "pass"]) for _ in range(args.runs))
    print(f"{'spec':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    medians = []
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        samples = time_validate(spec, args.runs)
        medians.append(statistics.median(samples))
        print(f"{spec.name:40s} {statistics.median(samples):9.3f} {min(samples):7.3f} {max(samples):7.3f}")
    print(f"\nmedian over specs: {statistics.median(medians):.3f} s  (target < 0.3 s)")
    print(f"bare `python -c pass` start-up: {baseline:.3f} s; specc import: {import_time_of_cli():.3f} s")
    print(f"torch imported on the validate path: {torch_imported_by_validate()}")


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
