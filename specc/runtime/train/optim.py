"""AdamW and the learning-rate schedules (warmup + cosine | linear | WSD | constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from specc.spec.model import ModelSpec
from specc.spec.schedule import ScheduleSpec


def build_optimizer(model_parts: list[nn.Module], schedule: ScheduleSpec, model: ModelSpec,
                    device_type: str) -> torch.optim.AdamW:
    """AdamW over all parts; matrices decay, norms and biases do not (nanoGPT's grouping).

    With muP, hidden matrices get lr x base/width (Yang et al. 2022, Table 3, Adam column).
    The fused kernel is used when asked for and the device is a GPU.
    """
    decay, no_decay, hidden = [], [], []
    mup = model.init.mup_base_width
    for part in model_parts:
        for name, param in part.named_parameters():
            if param.dim() < 2:
                no_decay.append(param)
            elif mup and "embeddings" not in name and not name.startswith("output"):
                hidden.append(param)
            else:
                decay.append(param)
    opt = schedule.optimizer
    groups = [{"params": decay, "weight_decay": opt.weight_decay, "lr": schedule.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": schedule.lr}]
    if hidden:
        groups.append({"params": hidden, "weight_decay": opt.weight_decay, "lr": schedule.lr * mup / model.hidden_size})
    fused = opt.fused and device_type == "cuda"
    return torch.optim.AdamW(groups, lr=schedule.lr, betas=tuple(opt.betas), eps=opt.eps,
                             fused=fused or None, foreach=None if fused else True)


def lr_multiplier(step: int, schedule: ScheduleSpec, total_steps: int) -> float:
    """Learning rate at `step` as a fraction of the peak.

    Linear warmup over `warmup_steps`; then cosine (Loshchilov & Hutter 2017) or linear decay
    to min_lr, constant, or WSD: flat until the last `decay_fraction` of steps, then linear
    to min_lr (Hu et al. 2024, MiniCPM).
    """
    floor = schedule.min_lr / schedule.lr
    warmup = schedule.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if schedule.decay == "constant":
        return 1.0
    if schedule.decay == "wsd":
        decay_steps = max(1, round(schedule.decay_fraction * total_steps))
        decay_start = max(warmup, total_steps - decay_steps)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
        return 1.0 - progress * (1.0 - floor)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if schedule.decay == "linear":
        return 1.0 - progress * (1.0 - floor)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - floor)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleSpec,
                       total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, schedule, total_steps))
