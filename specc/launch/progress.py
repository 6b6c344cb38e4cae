"""Live progress of `specc launch`: one line per running stage, read from the stage's metrics files.

Why from metrics files, not from the job's terminal: under submitit (local or Slurm) a stage's
stdout and stderr are log files, so the runtime's own progress bars never show. Every stage
appends JSON lines to `<run_dir>/<stage>/metrics.jsonl` (`specc.runtime.io.MetricsWriter`),
flushed at once; the launcher polls them while it waits for the job and shows

    03-pretrain  step 40/200  loss 5.1234  28,177 tok/s  elapsed 0:32  ETA 2:08
    01-data      filter 1,234/2,400 docs (51%) 4.1/8.0 MB, kept 1,000  elapsed 0:05  ETA 0:05

ETA: from the measured time per step over the last few step records; before there are two,
from the plan's predicted step time (marked `(plan)`). Data: documents (or bytes) read against
the totals of its `event: plan` record. Tokenizer: its phase, then parts encoded / parts.

On a terminal the lines update in place (rich.live); otherwise (CI logs, `| tee`) a plain line
is appended at most every `SPECC_PROGRESS_SECONDS` seconds (default 10) per stage, when it
changed. At the end `print_summary` shows each stage's outcome, the eval table and the report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EVERY_S = 10.0
POLL_S = 0.5
ETA_WINDOW = 5
"""Step records the measured step time is averaged over."""
QUEUED_STATES = ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "SUSPENDED")
"""Slurm states of a job that waits to run."""


def format_duration(seconds: float | None) -> str:
    """`1:02:03`, `2:08`, or `?` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _megabytes(value: float) -> str:
    return f"{value / 1e6:,.1f}"


class MetricsTail:
    """New complete JSON lines of a stage's metrics files since the last call (offsets kept per file)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.offsets: dict[Path, int] = {}

    def read(self) -> list[dict]:
        records: list[dict] = []
        for path in sorted(self.directory.glob("metrics*.jsonl")):
            try:
                with open(path, "rb") as stream:
                    stream.seek(self.offsets.get(path, 0))
                    chunk = stream.read()
            except OSError:
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]  # a line being written is read next time
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            for line in complete.splitlines():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records


def _planned_steps(config: dict) -> int | None:
    """Pretraining steps from the stage config: `schedule.steps`, else token_budget / tokens per step."""
    schedule = (config.get("params") or {}).get("schedule") or {}
    if schedule.get("steps"):
        return int(schedule["steps"])
    tokens = schedule.get("global_batch_tokens") or (
        (schedule.get("global_batch_size") or 0) * (schedule.get("seq_len") or 0))
    if schedule.get("token_budget") and tokens:
        return -(-int(schedule["token_budget"]) // int(tokens))
    return None


@dataclass
class StageView:
    """What is known about one running stage, updated from its metrics records."""

    name: str
    """The stage's name (`pretrain`, `sft`, `data`, ...)."""
    label: str
    """Its bundle directory name (`03-pretrain`), the line's first word."""
    config: dict
    started: float = field(default_factory=time.time)
    total_steps: int | None = None
    predicted_step_s: float | None = None
    step: int | None = None
    steps_seen: list[tuple[float, int]] = field(default_factory=list)
    last: dict = field(default_factory=dict)
    phase: str | None = None
    data_totals: dict = field(default_factory=dict)
    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    parts_total: int | None = None
    parts_done: int = 0
    items_done: set = field(default_factory=set)
    done: bool = False
    queued: str | None = None
    """The scheduler's state while the job waits for resources (`PENDING`), else None."""

    @classmethod
    def for_stage(cls, name: str, label: str, config: dict) -> StageView:
        params = config.get("params") or {}
        view = cls(name, label, config)
        if name in ("pretrain", "pretrain_tpu"):
            view.total_steps = _planned_steps(config)
            view.predicted_step_s = (params.get("predicted") or {}).get("step_s")
        if name == "eval":
            evaluation = params.get("eval") or {}
            view.parts_total = len(params.get("checkpoints") or {}) * (
                len(evaluation.get("perplexity") or []) + len(evaluation.get("tasks") or []))
        if name == "deploy":
            view.parts_total = len(params.get("targets") or [])
        return view

    # --- reading records -------------------------------------------------------------------

    def update(self, records: list[dict]) -> None:
        for record in records:
            self._apply(record)

    def _apply(self, record: dict) -> None:
        event = record.get("event")
        if event == "start" and record.get("total_steps"):
            self.total_steps = int(record["total_steps"])
        elif event == "plan":
            self.phase, self.data_totals = record.get("phase", "filter"), record.get("sources") or {}
        elif event == "phase":
            self.phase = record.get("phase")
            if record.get("parts_total") is not None:
                self.parts_total, self.parts_done = int(record["parts_total"]), 0
        elif event == "part" and self.name == "data":
            self.documents_in += int(record.get("documents_in", 0))
            self.documents_out += int(record.get("documents_out", 0))
            self.bytes_in += int(record.get("bytes_in", 0))
        elif event == "part":
            self.parts_done += 1
        elif event == "done":
            self.phase = "done"
        elif "task" in record and "metric" in record:  # an eval score
            self.items_done.add((record.get("model"), record["task"]))
            self.last = record
        elif self.name == "deploy" and "target" in record:
            self.items_done.add(record["target"])
            self.last = record
        if isinstance(record.get("step"), int) and event is None:
            self.step = record["step"]
            self.steps_seen.append((float(record.get("time", time.time())), record["step"]))
            self.last = {**self.last, **{k: v for k, v in record.items() if k != "layout"}}

    def scheduler_state(self, state: str | None) -> None:
        """Note the job's state: elapsed time counts from when it leaves the queue."""
        waiting = state in QUEUED_STATES
        if self.queued and not waiting:
            self.started = time.time()
        self.queued = state if waiting else None

    # --- the line ---------------------------------------------------------------------------

    def seconds_per_step(self) -> tuple[float | None, bool]:
        """(seconds per step, measured?): over the last few step records (steadier than the last
        interval alone, and still following a slowdown), else the plan's prediction."""
        if len(self.steps_seen) >= 2:
            (t0, s0), (t1, s1) = self.steps_seen[-ETA_WINDOW:][0], self.steps_seen[-1]
            if s1 > s0 and t1 >= t0:
                return (t1 - t0) / (s1 - s0), True
        if self.steps_seen and self.steps_seen[-1][1] > 0:
            # one record: the measured step time it carries (the first step includes warm-up)
            step_s = self.last.get("step_s")
            if isinstance(step_s, (int, float)):
                return float(step_s), True
        return self.predicted_step_s, False

    def eta(self, now: float | None = None) -> tuple[float | None, bool]:
        """(seconds left, measured?) of the current stage, None when not known."""
        if self.total_steps:
            per_step, measured = self.seconds_per_step()
            if per_step is None:
                return None, False
            return per_step * (self.total_steps - (self.step or 0)), measured
        fraction = self.fraction()
        elapsed = (time.time() if now is None else now) - self.started
        if fraction and fraction > 0:
            return elapsed * (1 - fraction) / fraction, True
        return None, False

    def fraction(self) -> float | None:
        """Fraction of the stage's countable work done (data: of the filter phase), when known."""
        if self.name == "data" and self.phase == "filter":
            docs = [t.get("documents") for t in self.data_totals.values()]
            if docs and all(d is not None for d in docs) and sum(docs):
                return min(1.0, self.documents_in / sum(docs))
            sizes = [t.get("bytes") for t in self.data_totals.values()]
            if sizes and all(b is not None for b in sizes) and sum(sizes):
                return min(1.0, self.bytes_in / sum(sizes))
            return None
        if self.parts_total:
            done = len(self.items_done) if self.name in ("eval", "deploy") else self.parts_done
            return min(1.0, done / self.parts_total)
        return None

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.queued:
            return f"{self.label:<14} queued ({self.queued})  waiting {format_duration(now - self.started)}"
        body = self._body()
        remaining, measured = self.eta(now)
        timing = f"elapsed {format_duration(now - self.started)}"
        if remaining is not None and not self.done:
            timing += f"  ETA {format_duration(remaining)}" + ("" if measured else " (plan)")
        return f"{self.label:<14} {body}  {timing}"

    def _body(self) -> str:
        if self.name == "data":
            return self._data_body()
        if self.name == "tokenize":
            if self.phase == "encoding" and self.parts_total:
                return f"encoding part {self.parts_done}/{self.parts_total}"
            return self.phase or "starting"
        if self.name == "eval":
            last = self.last
            score = (f", last {last['task']} {last['metric']} {last['value']:.4g}"
                     if isinstance(last.get("value"), (int, float)) else "")
            return f"scored {len(self.items_done)}/{self.parts_total or '?'} (model, task){score}"
        if self.name == "deploy":
            return f"exported {len(self.items_done)}/{self.parts_total or '?'} target(s)"
        return self._training_body()

    def _training_body(self) -> str:
        if self.step is None:
            return f"step 0/{self.total_steps or '?'} (starting)"
        parts = [f"step {self.step}/{self.total_steps or '?'}"]
        for key, shown in (("loss", "loss {:.4f}"), ("val_loss", "val {:.4f}"), ("tokens_per_s", "{:,.0f} tok/s"),
                           ("reward", "reward {:.3f}")):
            value = self.last.get(key)
            if isinstance(value, (int, float)):
                parts.append(shown.format(value))
        return "  ".join(parts)

    def _data_body(self) -> str:
        if self.phase is None:
            return "starting"
        if self.phase == "filter":
            docs = [t.get("documents") for t in self.data_totals.values()]
            sizes = [t.get("bytes") for t in self.data_totals.values()]
            total_docs = f"/{sum(docs):,}" if docs and all(d is not None for d in docs) else ""
            total_bytes = f"/{_megabytes(sum(sizes))}" if sizes and all(b is not None for b in sizes) else ""
            fraction = self.fraction()
            share = f" ({fraction:.0%})" if fraction is not None else " (total unknown)"
            return (f"filter {self.documents_in:,}{total_docs} docs{share} {_megabytes(self.bytes_in)}{total_bytes} MB, "
                    f"kept {self.documents_out:,}")
        return f"{self.phase} ({self.documents_in:,} docs read, {self.documents_out:,} kept by the filters)"


class LiveProgress:
    """The launcher's `echo` that also draws live progress while it waits for a job.

    `specc.launch.launcher._collect` calls `wait_for(job, stage)` before it collects the job's
    result; everything else it reports comes through `__call__` as lines."""

    def __init__(self, bundle_dir: Path, stream=None, live: bool | None = None, every_s: float | None = None):
        self.bundle_dir = bundle_dir.resolve()
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        if every_s is None:
            every_s = float(os.environ.get("SPECC_PROGRESS_SECONDS", DEFAULT_EVERY_S))
        self.every_s = every_s
        self._display = None

    def __call__(self, line: str) -> None:
        if self._display is not None:
            self._display.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self.stream, flush=True)

    def wait_for(self, job, stage) -> None:
        """Poll the stage's metrics until the job is done, showing its line (live or throttled)."""
        view = StageView.for_stage(stage.name, stage.dirname, stage.config)
        tail = MetricsTail(stage.outputs(self.bundle_dir))
        if self.live:
            self._wait_live(job, view, tail)
        else:
            self._wait_plain(job, view, tail)

    def _wait_plain(self, job, view: StageView, tail: MetricsTail) -> None:
        shown, shown_at = None, 0.0
        while not job.done():
            view.update(tail.read())
            view.scheduler_state(_state(job))
            now = time.time()
            line = view.line(now)
            body = line.split("  elapsed")[0]
            if now - shown_at >= self.every_s and body != shown:
                print(line, file=self.stream, flush=True)
                shown, shown_at = body, now
            time.sleep(POLL_S)
        view.update(tail.read())

    def _wait_live(self, job, view: StageView, tail: MetricsTail) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        console = Console(file=self.stream)
        with Live(Text(view.line()), console=console, refresh_per_second=4, transient=True) as display:
            self._display = display
            try:
                while not job.done():
                    view.update(tail.read())
                    view.scheduler_state(_state(job))
                    display.update(Text(view.line()))
                    time.sleep(POLL_S)
            finally:
                self._display = None
        view.update(tail.read())


def _state(job) -> str | None:
    """The scheduler's state of a submitit job (`PENDING`, `RUNNING`, ...); None if it cannot tell."""
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001 - sacct failing now and then must not stop the wait
        return None


# --- the end of a launch -------------------------------------------------------------------


def eval_table(bundle_dir: Path) -> str | None:
    """The eval stage's results (`results.json`) as an aligned text table, None when there are none."""
    from specc.launch.launcher import read_stages

    for stage in read_stages(bundle_dir):
        path = stage.outputs(bundle_dir) / "results.json"
        if stage.name != "eval" or not path.is_file():
            continue
        rows = json.loads(path.read_text()).get("results") or []
        if not rows:
            return None
        lines = [f"  {'model':<12} {'task':<18} {'metric':<12} {'value':>10} {'± stderr':>10} {'n':>6}"]
        for row in rows:
            stderr = "" if row.get("stderr") is None else f"{row['stderr']:.4f}"
            lines.append(f"  {row['model']:<12} {row['task']:<18} {row['metric']:<12} {row['value']:>10.4f} "
                         f"{stderr:>10} {row['count']:>6}")
        return "\n".join(lines)
    return None
