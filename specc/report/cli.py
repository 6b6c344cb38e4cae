"""`specc report BUNDLE [-o PATH]` and the `--html` output of `specc plan` (light to import)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_parser(commands) -> None:
    report = commands.add_parser("report", help="write one offline HTML page about a launched run "
                                                "(curves, predicted vs measured, data funnel, eval, deploy)")
    report.add_argument("bundle", type=Path, help="bundle directory")
    report.add_argument("-o", "--output", type=Path, help="file to write (default: BUNDLE/jobs/report.html)")


def cmd_report(args: argparse.Namespace) -> int:
    from specc.launch.launcher import LaunchError
    from specc.runtime.integrity import StorageError

    if not (args.bundle / "manifest.json").is_file():
        print(f"specc report: error: {args.bundle}: not a bundle directory (no manifest.json)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        path = write_run_report(args.bundle, args.output)
    except (LaunchError, StorageError, OSError) as error:
        print(f"specc report: error: {error}", file=sys.stderr)
        return 1
    print(f"report: {path} ({time.perf_counter() - started:.1f} s); open it in a browser")
    return 0


def write_run_report(bundle_dir: Path, output: Path | None = None) -> Path:
    """The run's report, readable by everyone who can read the bundle (mode 0644)."""
    from specc.report.run import write_report

    path = write_report(bundle_dir, output)
    os.chmod(path, 0o644)
    return path


def write_plan_report(plan: dict, output: Path) -> None:
    """`specc plan --html PATH`: the plan drawn, written atomically (mode 0644)."""
    from specc.report.plan import render
    from specc.runtime.io import atomic_write_text

    atomic_write_text(output, render(plan))
    os.chmod(output, 0o644)
