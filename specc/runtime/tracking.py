"""Experiment tracking behind `MetricsWriter`: every metrics.jsonl record also goes to TensorBoard.

Why a sink behind the metrics writer rather than calls in the loops: each training, alignment
and eval stage already writes exactly what a person wants to plot (loss, val_loss, lr,
grad_norm, tokens_per_s, mfu, peak_memory_gib, step_s and the plan's predictions beside them,
eval scores with standard errors) through one `MetricsWriter.write`; mirroring those records
keeps the trackers and the jsonl in agreement and the loops free of tracker code.

The stage's config carries a `tracking` block (emitted from the spec's `tracking:` section for
stages that train or evaluate, `specc.emit.stages`); `python -m specc.runtime` calls
`configure` with it before the stage runs. Event files go to `<run_dir>/<log_dir>`
(`tensorboard/<stage>`), so `tensorboard --logdir <run_dir>/tensorboard` shows every stage as
one run. The writer is created at the first plotted record, so short-lived writers (a stage's
`start` record) leave no empty event files; `torch.utils.tensorboard`'s event-file writer (which needs the
`tensorboard` package) is imported only then.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_active: dict | None = None
"""The running stage's tracking settings: {"config", "bundle_dir", "log_dir", ...}; None when off."""

SKIPPED_KEYS = frozenset({"step", "time", "event"})
QUEUE_EVENTS = 1000


def configure(config: dict, config_path: Path) -> None:
    """Turn tracking on for this process when the stage config asks for it (`config["tracking"]`)."""
    global _active
    tracking = config.get("tracking") or {}
    if not tracking.get("tensorboard"):
        _active = None
        return
    run_dir = Path(config["run_dir"])
    _active = {"config": config, "bundle_dir": config_path.resolve().parent.parent.parent,
               "stage_dir": (run_dir / tracking["stage_dir"]).resolve(),
               "log_dir": run_dir / tracking["log_dir"], "run_name": tracking["run_name"]}


def sink_for(metrics_path: Path) -> TensorBoardSink | None:
    """The sink for a metrics file: only the running stage's own `metrics.jsonl`
    (not scratch files such as a deploy draft's training metrics)."""
    if _active is None or metrics_path.name != "metrics.jsonl":
        return None
    if metrics_path.parent.resolve() != _active["stage_dir"]:
        return None
    return TensorBoardSink(_active)


def scalars(record: dict) -> tuple[int, dict[str, float]]:
    """(global step, {tag: value}) of one metrics record; no values when nothing in it is plotted.

    Step records (`step` without `event`): every finite number but the step and time, under
    its own name (`loss`, `val_loss`, `lr`, `tokens_per_s`, `predicted_step_s`, ...). Eval rows
    (`model`, `task`, `metric`, `value`, `stderr`): `eval/<model>/<task>/<metric>` and
    `.../stderr` at step 0."""
    if "task" in record and "metric" in record and "model" in record:
        base = f"eval/{record['model']}/{record['task']}/{record['metric']}"
        values = {base: record.get("value"), f"{base}/stderr": record.get("stderr")}
        return 0, {tag: float(v) for tag, v in values.items() if _plottable(v)}
    if not isinstance(record.get("step"), int) or "event" in record:
        return 0, {}
    values = {key: float(value) for key, value in record.items() if key not in SKIPPED_KEYS and _plottable(value)}
    return record["step"], values


def _plottable(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardSink:
    """Writes the plotted values of metrics records to TensorBoard event files."""

    def __init__(self, active: dict):
        self.active = active
        self._writer = None

    def record(self, record: dict) -> None:
        """One event per record holding all its values: a tenth of the events (and of the background
        thread's checksumming) that one `add_scalar` per value would make (benchmarks/tracking_overhead.py)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        step, values = scalars(record)
        if not values:
            return
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        self._open().add_summary(summary, step, record.get("time"))

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard.writer import FileWriter

            # a queue long enough that the training thread never waits for the writer thread
            self._writer = FileWriter(str(self.active["log_dir"]), max_queue=QUEUE_EVENTS, flush_secs=10)
            self._log_config(self._writer)
        return self._writer

    def _log_config(self, writer) -> None:
        """The run's name, the resolved spec and the stage's config, as text (TensorBoard's Text tab)."""
        from torch.utils.tensorboard.summary import text

        writer.add_summary(text("run_name", self.active["run_name"]), 0)
        spec = self.active["bundle_dir"] / "spec.resolved.yaml"
        if spec.is_file():
            writer.add_summary(text("spec", _code(spec.read_text())), 0)
        writer.add_summary(text("stage_config", _code(json.dumps(self.active["config"], indent=2, sort_keys=True))), 0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _code(text: str) -> str:
    """Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())
