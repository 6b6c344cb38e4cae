"""One training lifecycle: everything a training loop does around its step function.

Pretraining on GPU/CPU (`specc.runtime.train.loop`), pretraining under torch-xla SPMD
(`specc.runtime.tpu.loop`) and the alignment stages (`specc.runtime.align.trainer`) differ
in how they place the model on devices and compute a step. What surrounds the step is the
same contract for all three, kept here once so that a fix to it reaches every loop:

- resume from the newest intact checkpoint (a damaged one is set aside for the one before,
  `specc.runtime.train.checkpoint.newest_intact`);
- SIGTERM/SIGUSR2 (Slurm's warning ahead of a time limit or preemption) is noted, the step
  finishes, a checkpoint is saved and the process exits EXIT_REQUEUE (75), so that the job
  is requeued and resumes where it stopped;
- checkpoint cadence: every `interval` steps, every `every_minutes` of wall time, at the last
  step and on a signal; the ranks take the maximum of their flags (one all-reduce), so that
  they all save, or all stop, at the same step;
- a NaN/inf loss stops the run before the diverged state reaches a checkpoint (exit 1);
- step records to metrics.jsonl (rank 0 only), echoed as plain lines or a progress bar, with
  the measured peak memory and the planner's predictions next to the measurements.

A loop drives it as:

    life = Lifecycle("pretrain", out_dir, main=rank == 0, device=device, echo=rank == 0)
    meta = life.resume(lambda path: load_checkpoint(path, ...))     # None: from step 0
    with life.start(start_step, last_step, Cadence(interval, every_minutes)):
        while step < last_step:
            ... the step ...; step += 1
            life.end_of_step(step, record, loss, save=lambda s: save_checkpoint(...))
"""

from __future__ import annotations

import math
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from specc.runtime.io import MetricsWriter
from specc.runtime.train.checkpoint import diverged, newest_intact

EXIT_REQUEUE = 75
"""Exit status after checkpointing on SIGTERM/SIGUSR2 (sysexits EX_TEMPFAIL): the job was
preempted or hit its time limit cleanly; rerunning the same config resumes it. The Slurm
template requeues on it (`--signal=USR2@90` + `--requeue`, submitit's convention)."""


class StopSignal:
    """Records SIGTERM/SIGUSR2 (Slurm's warning before a time limit or preemption)."""

    def __init__(self) -> None:
        self.received = 0
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum


def agree(flags: list[int], device: torch.device | None = None) -> list[int]:
    """Element-wise max over all ranks, so every rank stops or checkpoints together.

    `device` is where the collective's tensor lives: the accelerator under NCCL, the CPU
    under gloo (the TPU hosts' group). One process: the flags as they are."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flags
    tensor = torch.tensor(flags, device=device, dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def peak_rss_gib() -> float:
    """The process's peak resident set (Linux ru_maxrss, KiB): the CPU's peak memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory_gib(device: torch.device) -> float:
    """Accelerator peak allocation on CUDA; on CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_gib()


def step_record(step: int, loss: float, lr: float, grad_norm: float, step_s: float, tokens_per_step: int,
                predicted: dict, num_devices: int, peak_memory: float) -> dict:
    """One metrics.jsonl line of a pretraining step; MFU from the planner's FLOPs/token (PaLM
    appendix B convention, over `num_devices` chips) and the planner's predicted step time and
    memory next to the measured ones (its error bars)."""
    tokens_per_s = tokens_per_step / step_s
    record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "step_s": step_s,
              "tokens_per_s": tokens_per_s, "peak_memory_gib": peak_memory}
    if predicted.get("flops_per_token") and predicted.get("peak_tflops"):
        record["mfu"] = predicted["flops_per_token"] * tokens_per_s / (predicted["peak_tflops"] * 1e12 * num_devices)
    if predicted.get("step_s"):
        record["predicted_step_s"] = predicted["step_s"]
    if predicted.get("peak_memory_gib"):
        record["predicted_peak_memory_gib"] = predicted["peak_memory_gib"]
    return record


def record_line(record: dict) -> str:
    """A metrics record as one console line: `step 3 loss 5.123 ...`."""
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())


class ProgressLog:
    """A rich progress bar on an interactive terminal (rank 0), plain metric lines otherwise."""

    def __init__(self, label: str, enabled: bool, start: int, total: int):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}"), TimeRemainingColumn())
            self.task = self.bar.add_task(label, total=total, completed=start, status="")
            self.bar.start()

    def step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, status=f"loss {loss:.4f}")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(record_line(record))
        else:
            print(record_line(record), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@dataclass(frozen=True)
class Cadence:
    """When to checkpoint besides the last step and a signal."""

    interval: int
    """Every this many steps."""
    every_minutes: float | None = None
    """And whenever this much wall time passed since the last save (None: never by time)."""


class Lifecycle:
    """Resume, signals, checkpoint cadence, step records, divergence and requeue of one run.

    `main` is the rank that writes metrics.jsonl and prints; every rank calls every method
    (saving, agreeing and stopping are collective). `echo` prints each record (or shows a
    bar on a terminal); `memory` reads this process's peak memory in GiB for step records.
    """

    def __init__(self, stage: str, out_dir: Path, *, main: bool = True, device: torch.device | None = None,
                 echo: bool = False, memory: Callable[[], float] | None = None):
        self.stage = stage
        self.out_dir = out_dir
        self.checkpoint_dir = out_dir / "checkpoints"
        self.main = main
        self.device = device
        self.echo = echo
        self.memory = memory or (lambda: peak_memory_gib(device or torch.device("cpu")))
        self.last_loss = float("nan")
        """The loss last read from the step (at logged steps and before each save)."""
        self.metrics: MetricsWriter | None = None
        self.progress: ProgressLog | None = None

    # --- before the first step ---------------------------------------------------------

    def resume(self, load: Callable[[Path], dict]) -> dict | None:
        """`load(path)` the newest intact checkpoint and return its checkpoint.json (collective);
        None when there is none, so the run starts at step 0."""
        path = newest_intact(self.checkpoint_dir, self.stage)
        if path is None:
            return None
        meta = load(path)
        if self.main:
            print(f"{self.stage}: resumed from {path} at step {meta['step']}", flush=True)
        return meta

    def start(self, start_step: int, last_step: int, cadence: Cadence) -> Lifecycle:
        """Catch the stop signals, open metrics.jsonl (main rank) and the progress display;
        use as `with life.start(...):` so that both close however the loop ends."""
        self.start_step, self.last_step, self.cadence = start_step, last_step, cadence
        self.stopper = StopSignal()
        self.metrics = MetricsWriter(self.out_dir / "metrics.jsonl") if self.main else None
        self.progress = ProgressLog(self.stage, self.main and self.echo, start_step, last_step)
        self.last_save = time.monotonic()
        return self

    def __enter__(self) -> Lifecycle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.metrics is not None:
            self.metrics.close()

    # --- each step -----------------------------------------------------------------------

    def logs(self, step: int, interval: int) -> bool:
        """Whether completed step `step` gets a metrics record: every `interval` steps, the
        first step of this run (its layout and start-up) and the last."""
        return step % interval == 0 or step == self.last_step or step == self.start_step + 1

    def evaluates(self, step: int, interval: int) -> bool:
        """Whether completed step `step` is followed by validation (interval 0: never)."""
        return bool(interval) and (step % interval == 0 or step == self.last_step)

    def step_record(self, step: int, loss: float, lr: float, grad_norm: float, step_s: float,
                    tokens_per_step: int, predicted: dict, num_devices: int) -> dict:
        """`step_record` with this process's peak memory."""
        return step_record(step, loss, lr, grad_norm, step_s, tokens_per_step, predicted, num_devices,
                           self.memory())

    def check_finite(self, step: int, loss: float | torch.Tensor | None) -> None:
        """Stop the run on a NaN/inf loss, naming the step and the newest checkpoint to go back to.

        Called on every rank with the same (reduced or replicated) loss, so they stop together,
        and before anything is saved: nothing diverged reaches a checkpoint. The error exits 1,
        which the launcher reports as a failure (never EXIT_REQUEUE: a requeue would diverge
        again). `loss` may be a device tensor (read here, which waits for the step); None
        when the step reports no loss."""
        if loss is None:
            return
        self.last_loss = value = float(loss)
        if math.isfinite(value):
            return
        if self.metrics is not None:
            self.metrics.write(step=step, loss=str(value), event="non_finite_loss")
        self.close()
        error = diverged(step, value, self.checkpoint_dir)
        if dist.is_initialized():
            dist.destroy_process_group()
        raise error

    def end_of_step(self, step: int, record: dict | None, loss: float | torch.Tensor | None,
                    save: Callable[[int], object]) -> None:
        """After completed step `step`: write its record, then (all ranks agreeing) check the
        loss and `save(step)` when a checkpoint is due, and exit for requeue after a signal.

        The loss is read at logged steps and before each save only: under lazy execution (XLA)
        reading it waits for the step."""
        if self.progress is not None:
            self.progress.step(step, self.last_loss)
        if record is not None and self.metrics is not None:
            self.metrics.write(**record)
            self.progress.log(record)
        every = self.cadence.every_minutes
        overdue = every is not None and time.monotonic() - self.last_save >= every * 60
        signalled, overdue = agree([self.stopper.received, int(overdue)], self.device)
        save_now = step % self.cadence.interval == 0 or signalled or overdue or step == self.last_step
        if save_now or (record is not None and "loss" in record):
            self.check_finite(step, loss)
        if save_now:
            save(step)
            self.last_save = time.monotonic()
        if signalled and step < self.last_step:
            self.requeue(step, signalled)

    def requeue(self, step: int, signum: int) -> None:
        """Leave after the signal checkpoint of `step` with EXIT_REQUEUE (every rank)."""
        self.close()
        if self.main:
            print(f"{self.stage}: signal {signum} received; checkpointed step {step}, "
                  f"exiting {EXIT_REQUEUE} to be requeued", flush=True)
        if dist.is_initialized():
            dist.destroy_process_group()
        sys.exit(EXIT_REQUEUE)
