"""Spec section `schedule`: optimizer, learning-rate schedule, batch and budget, checkpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Count, Number, PositiveCount, PositiveLength, PositiveMinutes


class OptimizerSpec(SpecModel):
    """AdamW (Loshchilov & Hutter 2019)."""

    name: Literal["adamw"] = "adamw"
    betas: tuple[Annotated[Number, Field(ge=0, lt=1)], Annotated[Number, Field(gt=0, lt=1)]] = (0.9, 0.95)
    """Adam beta1 in [0, 1) (0: no momentum), beta2 in (0, 1); typical (0.9, 0.95) (GPT-3, Llama)."""
    eps: Annotated[Number, Field(gt=0, lt=1)] = 1e-8
    """Added to the second-moment root; typical 1e-8 (1e-5 in Llama 2)."""
    weight_decay: Annotated[Number, Field(ge=0, le=1)] = 0.1
    """Decoupled weight decay (each step multiplies weights by 1 - lr x weight_decay); typical 0.1."""
    fused: bool = True
    """Use the fused kernel when the device has one."""


class ScheduleSpec(SpecModel):
    """Optimisation schedule and training budget."""

    optimizer: OptimizerSpec = OptimizerSpec()
    """The optimizer."""
    lr: Annotated[Number, Field(gt=0, le=1)]
    """Peak learning rate; typical AdamW pretraining values are 6e-4 (125M) to 6e-5 (175B) (GPT-3, Table 2.1), 3e-4 for Llama 3 8B."""
    min_lr: Annotated[Number, Field(ge=0, le=1)] = 0.0
    """Final learning rate of the decay (at most `lr`)."""
    warmup_steps: Annotated[Count, Field(ge=0)] = 0
    """Linear warmup steps."""
    decay: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    """Decay after warmup; `wsd` = warmup-stable-decay (Hu et al. 2024)."""
    decay_fraction: Annotated[Number, Field(gt=0, le=1)] = 0.2
    """For `wsd`: the final fraction of steps spent decaying."""
    seq_len: PositiveLength
    """Training sequence length in tokens."""
    global_batch_size: PositiveCount | None = None
    """Sequences per optimizer step (set this or `global_batch_tokens`)."""
    global_batch_tokens: PositiveLength | None = None
    """Tokens per optimizer step (set this or `global_batch_size`); binary units as in papers: `4M` = 4,194,304 = 512 x 8192."""
    token_budget: PositiveCount | None = None
    """Total training tokens, e.g. `2T` (set this or `steps`)."""
    steps: PositiveCount | None = None
    """Total optimizer steps (set this or `token_budget`)."""
    grad_clip: Annotated[Number, Field(ge=0)] = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    checkpoint_interval: PositiveCount = 1000
    """Save a checkpoint every this many steps."""
    checkpoint_every: PositiveMinutes | None = None
    """Also save a checkpoint at least this often in wall time, e.g. `30min`."""
    keep_checkpoints: Annotated[int, Field(ge=1)] = 3
    """Keep the newest k complete checkpoints."""
    eval_interval: Annotated[int, Field(ge=0)] = 1000
    """Validation loss every this many steps (0 disables)."""
    eval_batches: PositiveCount = 10
    """Validation batches per evaluation."""
    log_interval: PositiveCount = 10
    """Metrics are written every this many steps."""
    seed: int = 0
    """Seed of initialisation and data order."""

    def batch_sequences(self) -> int | None:
        """Sequences per optimizer step, whichever way the batch was given."""
        if self.global_batch_size is not None:
            return self.global_batch_size
        if self.global_batch_tokens is not None:
            return self.global_batch_tokens // self.seq_len
        return None

    def total_steps(self) -> int | None:
        """Optimizer steps, from `steps` or from the token budget."""
        if self.steps is not None:
            return self.steps
        sequences = self.batch_sequences()
        if self.token_budget is None or not sequences:
            return None
        return -(-self.token_budget // (sequences * self.seq_len))
