"""Log-probabilities of continuations given contexts: the one primitive that multiple-choice
evaluation, perplexity, SFT, DPO, the reward model and PPO all build on.

Sequences are right-padded into one batch: with causal attention a position never sees the
padding after it, so padded and unpadded scores agree (checked by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PaddedBatch:
    inputs: torch.Tensor
    """(batch, length) token ids fed to the model."""
    targets: torch.Tensor
    """(batch, length) the next token at each position."""
    mask: torch.Tensor
    """(batch, length) float: 1 where the target is part of the scored continuation."""


def pad_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int, max_len: int) -> PaddedBatch:
    """Batch (context, continuation) pairs; contexts are cut from the left to fit max_len.

    The model sees context + continuation[:-1] and predicts continuation, so the last
    context token predicts the first continuation token.
    """
    rows = []
    for context, continuation in pairs:
        if not continuation:
            raise ValueError("cannot score an empty continuation")
        sequence = (list(context) + list(continuation))[-(max_len + 1):]
        scored = min(len(continuation), len(sequence) - 1)
        rows.append((sequence[:-1], sequence[1:], scored))
    length = max(len(inputs) for inputs, _, _ in rows)
    inputs = torch.full((len(rows), length), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length))
    for row, (x, y, scored) in enumerate(rows):
        inputs[row, :len(x)] = torch.tensor(x)
        targets[row, :len(y)] = torch.tensor(y)
        mask[row, len(y) - scored:len(y)] = 1.0
    return PaddedBatch(inputs, targets, mask)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position, in float32: (batch, length)."""
    return -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


def continuation_logprobs(model: torch.nn.Module, batch: PaddedBatch) -> torch.Tensor:
    """Sum of continuation log-probs, (batch,), differentiable, from the model's own head
    (`Transformer.forward(tokens, targets)`: chunked, without the full logits, unless `parallel.loss: full`)."""
    device = next(model.parameters()).device
    logprobs = model(batch.inputs.to(device), targets=batch.targets.to(device))
    return (logprobs * batch.mask.to(device)).sum(dim=-1)


def continuation_scores(model: torch.nn.Module, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of continuation log-probs, continuation token counts, whether greedy decoding
    would produce the continuation), each of shape (batch,). Differentiable in the model."""
    device = next(model.parameters()).device
    inputs, targets, mask = batch.inputs.to(device), batch.targets.to(device), batch.mask.to(device)
    logits = model(inputs)
    logprobs = token_logprobs(logits, targets)
    greedy = ((logits.argmax(dim=-1) == targets) | (mask == 0)).all(dim=-1)
    return (logprobs * mask).sum(dim=-1), mask.sum(dim=-1), greedy
