"""The resumable optimisation loop every alignment stage shares.

A stage supplies `step_fn(step, update) -> dict of metrics`: it computes losses for its rank's
share of that step's data, calls backward, and calls `update()` (clip, optimizer step, zero
grads) once (SFT, DPO, reward model) or several times (PPO's epochs over one rollout batch).
The loop owns the optimizer and the learning-rate warmup; metrics, checkpoints, signals, the
NaN stop and the requeue exit are the lifecycle every training loop shares
(`specc.runtime.lifecycle`). Checkpoints are the pretraining runtime's DCP checkpoints
(`specc.runtime.train.checkpoint`): every rank writes its shards of the model, optimizer,
scheduler and RNG, and they load under another world size. Batches depend only on the step
number, so a stage killed at any point and rerun continues with the same numbers it would have
produced.

Alignment stages run on the distributed runtime of `specc.runtime.align.distributed`: one
process per device, every model FSDP2-sharded over all ranks (one process without torchrun).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from specc.runtime.align.distributed import AlignRuntime, device, single_process
from specc.runtime.lifecycle import Cadence, Lifecycle
from specc.runtime.train.checkpoint import load_checkpoint, save_checkpoint
from specc.runtime.train.loop import grad_norm_and_clip


def warmup_multiplier(step: int, warmup: int) -> float:
    """Linear warmup then constant: alignment runs are short and start from a trained model."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


@dataclass
class LoopSettings:
    out_dir: Path
    """The stage directory: checkpoints/ and metrics.jsonl go there."""
    total_steps: int
    lr: float
    checkpoint_interval: int = 50
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    keep: int = 2
    stage_name: str = "align"
    max_steps: int | None = None
    """Stop after this step (tests; the warmup and data order still follow `total_steps`)."""
    predicted: dict = field(default_factory=dict)
    """The plan's `step_s` and `peak_memory_gib` for this stage, logged beside the measurements."""


def build_optimizer(trainable: nn.Module, settings: LoopSettings) -> tuple[torch.optim.Optimizer, object]:
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_multiplier(step, settings.warmup_steps))
    return optimizer, scheduler


def step_record(step: int, metrics: dict, lr: float, step_s: float, peak_memory_gib: float, predicted: dict) -> dict:
    """One metrics.jsonl line: the stage's own metrics with the fields every training step record
    has (`specc.runtime.lifecycle.step_record`): step time, peak memory and the plan's predictions."""
    record = {"step": step, **metrics, "lr": lr, "step_s": step_s, "peak_memory_gib": peak_memory_gib}
    if predicted.get("step_s"):
        record["predicted_step_s"] = predicted["step_s"]
    if predicted.get("peak_memory_gib"):
        record["predicted_peak_memory_gib"] = predicted["peak_memory_gib"]
    return record


def train_loop(trainable: nn.Module, settings: LoopSettings, step_fn: Callable[[int, Callable[[], float]], dict],
               rt: AlignRuntime | None = None, on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Run steps [resume point, last step); returns the last step's metrics.

    `trainable` holds every module with trainable weights (one nn.Module so that one
    optimizer and one checkpoint cover them all, e.g. PPO's policy and value model).
    """
    rt = rt or single_process()
    optimizer, scheduler = build_optimizer(trainable, settings)
    life = Lifecycle(settings.stage_name, settings.out_dir, main=rt.main, device=rt.device)
    meta = life.resume(lambda path: load_checkpoint(path, [trainable], [optimizer], [scheduler]))
    start = int(meta["step"]) if meta is not None else 0
    last_step = min(settings.total_steps, settings.max_steps or settings.total_steps)
    last: dict = {}

    def update() -> float:
        grad_norm = grad_norm_and_clip([trainable], settings.max_grad_norm, rt.runtime)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def save(step: int) -> None:
        save_checkpoint(life.checkpoint_dir, step, [trainable], [optimizer], [scheduler], settings.keep)
        if on_checkpoint is not None:
            on_checkpoint(step)

    with life.start(start, last_step, Cadence(settings.checkpoint_interval)):
        for step in range(start, last_step):
            begin = time.perf_counter()
            trainable.train()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            last = step_fn(step, update)
            scheduler.step()
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            record = step_record(step + 1, last, lr, time.perf_counter() - begin, life.memory(), settings.predicted)
            # every step is logged; a float loss is checked before the checkpoint (PPO reports none)
            loss = last.get("loss")
            life.end_of_step(step + 1, record, loss if isinstance(loss, float) else None, save)
    trainable.eval()
    return last


__all__ = ["LoopSettings", "build_optimizer", "device", "step_record", "train_loop", "warmup_multiplier"]
