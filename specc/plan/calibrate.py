"""`specc calibrate`: fit a cluster's step-time profile from measured runs, closing the planner's loop.

Each run gives the planner's predicted step time split into compute (GEMMs, attention, memory-bound
work, pipeline bubble, optimizer) and exposed communication (tp, cp, pp, dp, ep), and a measured step
time. The profile is two scales, T = a x compute + b x communication, fitted by least squares on the
relative error (each run weighs the same whatever its step time). `b` is fitted only when at least
three runs exist and communication is at least 5% of some run's prediction; otherwise it stays 1
(the runs cannot tell it apart from `a`). Errors are reported before (the planner as it is), after
(in-sample) and leave-one-run-out (each run predicted by scales fitted on the others): the figure a
new run on the cluster can expect, and the error bars plans made with the profile print.

Inputs, in the same form: bundles that ran (`plan.json` gives the prediction, the pretrain stage's
`metrics.jsonl` the measured `step_s`: median over the logged steps after the first, which carries
compilation and allocator warm-up), or a CSV table with columns `spec`, `measured_step_s` and an
optional `overrides` (`;`-separated `--set` items), planned here (published runs, other clusters).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

COMPUTE_PARTS = ("compute", "bubble", "optimizer")
COMM_PARTS = ("tp_comm", "cp_comm", "pp_comm", "dp_comm", "ep_comm")
MIN_COMM_SHARE = 0.05
"""Communication share of a run's prediction below which the runs cannot identify its scale."""


class CalibrationError(ValueError):
    """A run that cannot be used (no plan, no measurements, a bad table row): the user's input."""


@dataclass(frozen=True)
class Run:
    """One measured run: the planner's unscaled compute and communication seconds, the measured step."""

    name: str
    accelerator: str
    compute_s: float
    comm_s: float
    measured_s: float

    def predicted(self, a: float = 1.0, b: float = 1.0) -> float:
        return a * self.compute_s + b * self.comm_s


def run_from_plan(name: str, plan: dict, measured_s: float) -> Run:
    """A run from a plan contract (its breakdown with any profile it was made with taken out again)."""
    breakdown = (plan.get("time") or {}).get("breakdown_s")
    if not breakdown or not isinstance(breakdown, dict):
        raise CalibrationError(f"{name}: the plan has no time.breakdown_s (seconds by part)")
    parts = {key: breakdown.get(key, 0.0) for key in COMPUTE_PARTS + COMM_PARTS}
    wrong = [f"{key}: {value!r}" for key, value in parts.items()
             if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)]
    if wrong:
        raise CalibrationError(f"{name}: time.breakdown_s holds {', '.join(wrong)}, not finite seconds")
    profile = plan.get("error_bars", {}).get("profile") or {}
    a, b = float(profile.get("compute_scale", 1.0)), float(profile.get("communication_scale", 1.0))
    run = Run(name=name, accelerator=plan.get("hardware", {}).get("accelerator", "?"),
              compute_s=sum(float(breakdown.get(k, 0.0)) for k in COMPUTE_PARTS) / a,
              comm_s=sum(float(breakdown.get(k, 0.0)) for k in COMM_PARTS) / b, measured_s=measured_s)
    if not (run.compute_s > 0 and math.isfinite(run.compute_s) and math.isfinite(run.comm_s)):
        # the fit divides by each run's compute share: a run without one cannot be fitted
        raise CalibrationError(f"{name}: the plan predicts no finite compute time (time.breakdown_s: "
                               f"{', '.join(COMPUTE_PARTS)} sum to {run.compute_s:.3g})")
    return run


def measured_step_s(metrics: Path) -> float:
    """Median `step_s` of a metrics.jsonl after its first logged step (warm-up)."""
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        value = record.get("step_s") if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
            steps.append(float(value))
    if not steps:
        raise CalibrationError(f"{metrics}: no measured step_s (a positive finite number in a record)")
    return statistics.median(steps[1:] or steps)


def run_from_bundle(bundle: Path) -> Run:
    """The pretrain stage of a bundle that ran: its plan.json and its metrics.jsonl."""
    from specc.launch.launcher import LaunchError, read_stages
    from specc.launch.readback import ReadbackError, load_plan

    plan_path = bundle / "plan.json"
    if not plan_path.is_file():
        raise CalibrationError(f"{bundle}: not a bundle (no plan.json)")
    try:  # files on disk between commands: checked before they are trusted (specc.launch.readback)
        plan = load_plan(plan_path, "re-emit the bundle (`specc launch SPEC --dry-run --force`)")
        stages = read_stages(bundle)
    except (ReadbackError, LaunchError) as error:
        raise CalibrationError(str(error)) from None
    trained = [s for s in stages if s.config.get("stage") == "pretrain"]
    metrics = [s.outputs(bundle) / "metrics.jsonl" for s in trained]
    found = [m for m in metrics if m.is_file()]
    if not found:
        raise CalibrationError(f"{bundle}: its pretrain stage has not run (no metrics.jsonl under "
                               f"{metrics[0] if metrics else 'a pretrain stage'}); launch it first")
    return run_from_plan(bundle.name, plan, measured_step_s(found[0]))


def runs_from_table(table: Path) -> list[Run]:
    """Rows `spec, measured_step_s[, overrides]` of a CSV; specs relative to the table, planned here."""
    from specc.diagnostics.check import check_file
    from specc.plan import build_plan, plan_json

    try:
        with table.open(newline="", encoding="utf-8") as handle:
            return _table_runs(table, csv.DictReader(handle), check_file, build_plan, plan_json)
    except UnicodeDecodeError as error:
        raise CalibrationError(f"{table}: not UTF-8 text (byte {error.start}): is it a CSV table?") from None
    except csv.Error as error:
        raise CalibrationError(f"{table}: not a readable CSV table ({error})") from None


def _table_runs(table: Path, reader: csv.DictReader, check_file, build_plan, plan_json) -> list[Run]:
    """The rows of an open table, each checked before it is planned (`runs_from_table`)."""
    if reader.fieldnames is None:
        raise CalibrationError(f"{table}: empty; a table starts with the header `spec,measured_step_s,overrides`")
    missing = {"spec", "measured_step_s"} - set(reader.fieldnames)
    if missing:
        raise CalibrationError(f"{table}:1: missing column(s) {', '.join(sorted(missing))} (the header has "
                               f"{', '.join(reader.fieldnames) or 'nothing'}; a table needs spec, measured_step_s "
                               "and optionally overrides)")
    runs = []
    for row in reader:
        where = f"{table}:{reader.line_num}"
        if None in row:
            raise CalibrationError(f"{where}: {len(reader.fieldnames) + len(row[None])} fields, the header has "
                                   f"{len(reader.fieldnames)} (quote a value that holds a comma)")
        try:
            measured = float(row["measured_step_s"])
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: measured_step_s {row['measured_step_s']!r} is not a number") from None
        if not 0 < measured < math.inf:
            raise CalibrationError(f"{where}: measured_step_s must be a positive finite number of seconds, "
                                   f"got {row['measured_step_s']!r}")
        overrides = [o.strip() for o in (row.get("overrides") or "").split(";") if o.strip()]
        result = check_file(table.parent / (row["spec"] or ""), overrides)
        if not result.valid:
            first = next(d for d in result.diagnostics if d.is_error)
            raise CalibrationError(f"{where}: {row['spec']} is invalid: {first.to_text().splitlines()[0]}")
        plan = json.loads(plan_json(build_plan(result.spec, overrides=overrides)))
        name = row.get("name") or f"{Path(row['spec']).stem}{' ' + ' '.join(overrides) if overrides else ''}"
        runs.append(run_from_plan(name, plan, measured))
    if not runs:
        raise CalibrationError(f"{table}: no rows")
    return runs


def fit(runs: list[Run]) -> tuple[float, float]:
    """(compute scale, communication scale) minimising the summed squared relative error."""
    x = [r.compute_s / r.measured_s for r in runs]
    y = [r.comm_s / r.measured_s for r in runs]
    only_compute = (sum(x2 * x2 for x2 in x), sum(x))
    a = only_compute[1] / only_compute[0]
    if len(runs) < 3 or not any(r.comm_s >= MIN_COMM_SHARE * r.predicted() for r in runs):
        return a, 1.0
    sxx, syy, sxy = sum(v * v for v in x), sum(v * v for v in y), sum(u * v for u, v in zip(x, y))
    det = sxx * syy - sxy * sxy
    if det <= 1e-12 * sxx * syy:
        return a, 1.0
    a2 = (syy * sum(x) - sxy * sum(y)) / det
    b2 = (sxx * sum(y) - sxy * sum(x)) / det
    return (a2, b2) if a2 > 0 and b2 > 0 else (a, 1.0)


def _abs_pct(errors: list[float]) -> tuple[float, float]:
    """Median and 90th percentile (nearest rank) of |error| in %."""
    absolute = sorted(abs(e) * 100 for e in errors)
    return statistics.median(absolute), absolute[min(len(absolute) - 1, round(0.9 * (len(absolute) - 1)))]


@dataclass(frozen=True)
class Calibration:
    runs: list[Run]
    scales: tuple[float, float]
    held_out: list[float | None]
    """Per run: its predicted step time with scales fitted on the other runs (None with one run)."""

    @property
    def method(self) -> str:
        return "leave-one-run-out" if len(self.runs) > 1 else "in-sample"

    def errors(self, which: str) -> list[float]:
        if which == "before":
            return [r.predicted() / r.measured_s - 1 for r in self.runs]
        if which == "after":
            return [r.predicted(*self.scales) / r.measured_s - 1 for r in self.runs]
        return [p / r.measured_s - 1 for r, p in zip(self.runs, self.held_out) if p is not None]

    def profile(self, name: str) -> dict:
        median, p90 = _abs_pct(self.errors("held_out" if len(self.runs) > 1 else "after"))
        return {"name": name, "accelerator": self.runs[0].accelerator, "compute_scale": round(self.scales[0], 4), "communication_scale": round(self.scales[1], 4),
                "runs": len(self.runs), "error_median_pct": round(median, 2), "error_p90_pct": round(p90, 2),
                "method": self.method}


def calibrate(runs: list[Run]) -> Calibration:
    held_out: list[float | None] = []
    for index, run in enumerate(runs):
        others = runs[:index] + runs[index + 1:]
        held_out.append(run.predicted(*fit(others)) if others else None)
    return Calibration(runs=runs, scales=fit(runs), held_out=held_out)


def profile_yaml(profile: dict) -> str:
    """The profile as a partial spec: `extends:` it from the cluster's specs."""
    lines = ["# A specc calibration profile (`specc calibrate`); apply it with `extends: <this file>`.",
             "cluster:", "  profile:"]
    for key in ("name", "accelerator", "compute_scale", "communication_scale", "runs", "error_median_pct", "error_p90_pct", "method"):
        value = profile[key]
        lines.append(f"    {key}: {json.dumps(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


def report(result: Calibration) -> str:
    """Per-run table and the before / after / held-out summary."""
    a, b = result.scales
    lines = [f"fitted on {len(result.runs)} run(s): compute_scale {a:.4f}, communication_scale {b:.4f}"
             + ("" if b != 1.0 else " (not identified by these runs: kept 1)"),
             f"{'run':40} {'measured s':>11} {'planned s':>10} {'before':>8} {'after':>8} {'held out':>9}"]
    for run, held in zip(result.runs, result.held_out):
        after = run.predicted(*result.scales)
        held_text = f"{held / run.measured_s - 1:+8.1%}" if held is not None else "       -"
        lines.append(f"{run.name[:40]:40} {run.measured_s:11.4g} {run.predicted():10.4g} "
                     f"{run.predicted() / run.measured_s - 1:+8.1%} {after / run.measured_s - 1:+8.1%} {held_text:>9}")
    before, after = _abs_pct(result.errors("before")), _abs_pct(result.errors("after"))
    summary = (f"|error| median (p90): before {before[0]:.1f}% ({before[1]:.1f}%), after {after[0]:.1f}% "
               f"({after[1]:.1f}%) in-sample")
    if len(result.runs) > 1:
        held = _abs_pct(result.errors("held_out"))
        summary += f", leave-one-run-out {held[0]:.1f}% ({held[1]:.1f}%)"
    else:
        summary += "; one run: no held-out error (calibrate on more runs to measure one)"
    lines.append(summary)
    return "\n".join(lines)


def error_bars(base: dict, accelerator) -> dict:
    """The plan's error bars: the published-run figures, plus the cluster profile's when one applies."""
    profile = accelerator.extra.get("calibration")
    return {**base, "profile": profile} if profile else base
