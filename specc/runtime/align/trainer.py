"""The resumable optimisation loop every alignment stage shares.

A stage supplies `step_fn(step, update) -> dict of metrics`: it computes losses for that
step's data, calls backward, and calls `update()` (clip, optimizer step, zero grads) once
(SFT, DPO, reward model) or several times (PPO's epochs over one rollout batch). The loop
owns the optimizer, the learning-rate warmup, metrics, checkpoints and signals. Checkpoints use
the pretraining runtime's DCP checkpoints (`specc.runtime.train.checkpoint`), which restore
model, optimizer, scheduler and RNG: batches depend only on the step number, so a stage
killed at any point and rerun continues with the same numbers it would have produced.

Alignment stages run in one process on one device (CPU or one GPU); every model a stage
holds is on that device.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from specc.runtime.io import MetricsWriter
from specc.runtime.train.checkpoint import diverged, load_checkpoint, newest_intact, save_checkpoint
from specc.runtime.train.loop import EXIT_REQUEUE, StopSignal


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def build_optimizer(trainable: nn.Module, settings: LoopSettings) -> tuple[torch.optim.Optimizer, object]:
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_multiplier(step, settings.warmup_steps))
    return optimizer, scheduler


def train_loop(trainable: nn.Module, settings: LoopSettings, step_fn: Callable[[int, Callable[[], float]], dict],
               on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Run steps [resume point, total_steps); returns the last step's metrics.

    `trainable` holds every module with trainable weights (one nn.Module so that one
    optimizer and one checkpoint cover them all, e.g. PPO's policy and value model).
    """
    optimizer, scheduler = build_optimizer(trainable, settings)
    checkpoints = settings.out_dir / "checkpoints"
    start = 0
    resume = newest_intact(checkpoints, settings.stage_name)
    if resume is not None:
        meta = load_checkpoint(resume, [trainable], [optimizer], [scheduler])
        start = int(meta["step"])
        print(f"{settings.stage_name}: resumed from {resume} at step {start}")
    stopper = StopSignal()
    last: dict = {}
    parameters = [p for p in trainable.parameters() if p.requires_grad]

    def update() -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None],
                                                   settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    with MetricsWriter(settings.out_dir / "metrics.jsonl") as metrics:
        for step in range(start, settings.total_steps):
            trainable.train()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            last = step_fn(step, update)
            scheduler.step()
            last = {**last, "lr": lr}
            metrics.write(step=step + 1, **last)
            done = step + 1
            if isinstance(last.get("loss"), float) and not math.isfinite(last["loss"]):
                raise diverged(done, last["loss"], checkpoints)  # before the diverged state is saved
            if done % settings.checkpoint_interval == 0 or done == settings.total_steps or stopper.received:
                save_checkpoint(checkpoints, done, [trainable], [optimizer], [scheduler], settings.keep)
                if on_checkpoint is not None:
                    on_checkpoint(done)
            if stopper.received and done < settings.total_steps:
                print(f"{settings.stage_name}: signal received; checkpointed step {done}, exiting {EXIT_REQUEUE}")
                sys.exit(EXIT_REQUEUE)
    trainable.eval()
    return last
