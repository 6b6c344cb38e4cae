"""`specc validate` start-up cost per example spec, process start included: median CPU time
(user + sys of the child, from `getrusage`) and median wall time, and proof that the validate
path never imports torch.

CPU time is the figure to compare: on a loaded machine wall time mostly measures the queue.
Each run is a fresh `specc` process, as a user's is; Python's bytecode cache for specc's own
modules is used when present (PYTHONDONTWRITEBYTECODE=1 with no __pycache__ compiles every module
on every run, ~0.05 CPU s more; the header says which case was measured). For scale, the line
"pydantic floor" is a process that only imports pydantic's model machinery and yaml: no spec
validation can cost less.

Run: .venv/bin/python benchmarks/validate_speed.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECC = Path(sys.executable).with_name("specc")
FLOOR = [sys.executable, "-c", "import pydantic.main, pydantic.fields, pydantic.plugin._loader, yaml"]
VALIDATE_TARGET_S = 0.3


def run_timed(command: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(CPU seconds, wall seconds, result) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, result


def medians(command: list[str], runs: int) -> tuple[float, float]:
    """Median (CPU s, wall s) over `runs` fresh processes; a failing command stops the benchmark."""
    cpu, wall = [], []
    for _ in range(runs):
        c, w, result = run_timed(command)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
        cpu.append(c)
        wall.append(w)
    return statistics.median(cpu), statistics.median(wall)


def bytecode_note() -> str:
    cached = any((ROOT / "specc" / "spec").glob("__pycache__/*.pyc"))
    writes = not os.environ.get("PYTHONDONTWRITEBYTECODE")
    return "specc bytecode " + ("cached" if cached or writes else "not cached (compiled on every run)")


def torch_imported_by_validate() -> bool:
    code = ("import sys; from specc.cli import main; main(['validate', 'specs/tiny.yaml']);"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"median of {args.runs} fresh processes; {bytecode_note()}")
    print(f"{'spec':40s} {'CPU s':>7s} {'wall s':>7s}")
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        cpu, wall = medians([str(SPECC), "validate", str(spec.relative_to(ROOT))], args.runs)
        print(f"{spec.name:40s} {cpu:7.3f} {wall:7.3f}")
    tiny, _ = medians([str(SPECC), "validate", "specs/tiny.yaml"], args.runs)
    floor, _ = medians(FLOOR, args.runs)
    bare, _ = medians([sys.executable, "-c", "pass"], args.runs)
    print(f"\nvalidate specs/tiny.yaml: {tiny:.3f} CPU s (target < {VALIDATE_TARGET_S} s)")
    print(f"pydantic floor (import pydantic.main + yaml only): {floor:.3f} CPU s; bare `python -c pass`: {bare:.3f} CPU s")
    print(f"torch imported on the validate path: {torch_imported_by_validate()}")


if __name__ == "__main__":
    main()
