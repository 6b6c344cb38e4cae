"""The resumable optimisation loop every alignment stage shares.

A stage supplies `step_fn(step, update) -> dict of metrics`: it computes losses for that
step's data, calls backward, and calls `update()` (clip, optimizer step, zero grads) once
(SFT, DPO, reward model) or several times (PPO's epochs over one rollout batch). The loop
owns the optimizer and the learning-rate warmup; metrics, checkpoints, signals and the NaN stop
are the lifecycle every training loop shares (`specc.runtime.lifecycle`). Checkpoints use
the pretraining runtime's DCP checkpoints (`specc.runtime.train.checkpoint`), which restore
model, optimizer, scheduler and RNG: batches depend only on the step number, so a stage
killed at any point and rerun continues with the same numbers it would have produced.

Alignment stages run in one process on one device (CPU or one GPU); every model a stage
holds is on that device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from specc.runtime.lifecycle import Cadence, Lifecycle
from specc.runtime.train.checkpoint import load_checkpoint, save_checkpoint


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
    life = Lifecycle(settings.stage_name, settings.out_dir)
    meta = life.resume(lambda path: load_checkpoint(path, [trainable], [optimizer], [scheduler]))
    start = int(meta["step"]) if meta is not None else 0
    last: dict = {}
    parameters = [p for p in trainable.parameters() if p.requires_grad]

    def update() -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None],
                                                   settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def save(step: int) -> None:
        save_checkpoint(life.checkpoint_dir, step, [trainable], [optimizer], [scheduler], settings.keep)
        if on_checkpoint is not None:
            on_checkpoint(step)

    with life.start(start, settings.total_steps, Cadence(settings.checkpoint_interval)):
        for step in range(start, settings.total_steps):
            trainable.train()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            last = step_fn(step, update)
            scheduler.step()
            last = {**last, "lr": lr}
            # every step is logged; a float loss is checked before the checkpoint (PPO reports none)
            loss = last.get("loss")
            life.end_of_step(step + 1, {"step": step + 1, **last}, loss if isinstance(loss, float) else None, save)
    trainable.eval()
    return last
