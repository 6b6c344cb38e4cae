"""The dense feed-forward network of a transformer block, also each shared expert of an MoE layer.

A module of its own so that `model.py` (dense blocks) and `moe.py` (shared experts) both import
it without importing each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x); relu/gelu: w2(act(w1 x))."""

    def __init__(self, hidden: int, width: int, activation: str):
        super().__init__()
        self.activation = activation
        self.w1 = nn.Linear(hidden, width, bias=False)
        self.w2 = nn.Linear(width, hidden, bias=False)
        self.w3 = nn.Linear(hidden, width, bias=False) if activation == "swiglu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is not None:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        act = F.relu if self.activation == "relu" else F.gelu
        return self.w2(act(self.w1(x)))
