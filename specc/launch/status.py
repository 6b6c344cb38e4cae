"""`specc status BUNDLE` and `specc cancel BUNDLE`: read and act on the last launch of a bundle.

Status joins three sources: the launch record (`jobs/launch.json`: stage, job id, the
outcome the launcher saw), the scheduler's live state for Slurm jobs still in flight
(`sacct`, falling back to `squeue`), and each stage's own outputs (`_SUCCESS.json`,
the last line of `metrics.jsonl`, predicted vs measured step time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from specc.emit.bundle import STATE_DIR
from specc.launch.launcher import LAUNCH_RECORD, LaunchError, read_stages
from specc.launch.readback import load_launch_record
from specc.runtime.io import is_complete


def load_record(bundle_dir: Path) -> dict:
    path = bundle_dir / STATE_DIR / LAUNCH_RECORD
    if not path.is_file():
        raise LaunchError(f"{bundle_dir}: never launched (no {STATE_DIR}/{LAUNCH_RECORD})")
    return load_launch_record(path)


def slurm_state(job_id: str) -> str | None:
    """The scheduler's state of a job (`RUNNING`, `COMPLETED`, ...), None if unknown."""
    for command in (["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"],
                    ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"]):
        try:
            output = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        states = [line.split()[0] for line in output.splitlines() if line.strip()]
        if states:
            return states[-1]
    return None


def _last_metrics(stage_dir: Path) -> dict | None:
    metrics = stage_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    for line in reversed(metrics.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return record
    return None


def stage_status(bundle_dir: Path) -> list[dict]:
    """One row per stage: name, job id, state, progress, last metrics, step time predicted vs measured."""
    record = load_record(bundle_dir)
    entries = {entry["dirname"]: entry for entry in record["stages"]}
    rows = []
    for stage in read_stages(bundle_dir):
        entry = entries.get(stage.dirname, {})
        outputs = stage.outputs(bundle_dir)
        state = entry.get("state", "not launched")
        if record["executor"] == "slurm" and entry.get("job_id") and state == "submitted":
            state = (slurm_state(entry["job_id"]) or state).lower()
        if is_complete(outputs, stage.config) and state not in ("skipped",):
            state = "completed"
        rows.append({"stage": stage.dirname, "job_id": entry.get("job_id"), "state": state,
                     "reason": entry.get("reason"), "progress": _progress(stage.config, outputs),
                     "metrics": _last_metrics(outputs)})
    return rows


def _progress(config: dict, outputs: Path) -> str:
    last = _last_metrics(outputs) or {}
    total = (config.get("params", {}).get("schedule") or {}).get("steps")
    if "step" in last and total:
        return f"step {last['step']}/{total}"
    return "done" if (outputs / "_SUCCESS.json").exists() else "-"


def render_status(bundle_dir: Path, rows: list[dict], predicted_step_s: float | None) -> str:
    lines = [f"bundle {bundle_dir.name}"]
    for row in rows:
        text = f"  {row['stage']:<14} {row['state']:<12} job {row['job_id'] or '-':<10} {row['progress']}"
        if row["reason"] and row["state"] in ("failed", "cancelled"):
            text += f"  ({row['reason']})"
        lines.append(text)
        metrics = row["metrics"] or {}
        shown = {k: v for k, v in metrics.items() if k in ("step", "loss", "val_loss", "tokens_per_s", "step_s")}
        if shown:
            lines.append("      last metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(shown.items())))
        if "step_s" in metrics:
            predicted = metrics.get("predicted_step_s", predicted_step_s)
            lines.append(f"      step time: measured {_fmt(metrics['step_s'])} s, predicted {_fmt(predicted)} s")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cancel(bundle_dir: Path) -> list[str]:
    """Cancel the jobs of the last launch that may still run; returns what was cancelled."""
    record = load_record(bundle_dir)
    cancelled = []
    for entry in record["stages"]:
        if entry.get("state") != "submitted" or not entry.get("job_id"):
            continue
        if record["executor"] == "slurm":
            subprocess.run(["scancel", entry["job_id"]], check=False, timeout=60)
            cancelled.append(f"{entry['dirname']}: scancel {entry['job_id']}")
        elif _interrupt_local(entry["job_id"]):
            cancelled.append(f"{entry['dirname']}: interrupted local job {entry['job_id']}")
    return cancelled


def _interrupt_local(job_id: str) -> bool:
    """SIGINT to a LocalExecutor job (its id is the pid of submitit's controller), as submitit's
    own `LocalJob.cancel` does; only if that pid still runs submitit's controller."""
    try:
        pid = int(job_id)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (ValueError, OSError):
        return False
    if "submitit" not in command:
        return False
    os.kill(pid, signal.SIGINT)
    return True
