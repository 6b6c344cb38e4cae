"""Greedy and sampled decoding with the KV cache.

`next_token_distribution` turns logits into the distribution a decoder samples from
(temperature, top-k, top-p); greedy decoding is the temperature-0 limit, a one-hot on the
argmax. Speculative decoding uses the same function for draft and target, so its
accept/reject rule compares exactly the distributions plain decoding samples from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from specc.runtime.infer.kv_cache import forward_cached, new_cache
from specc.runtime.train.model import Transformer


@dataclass(frozen=True)
class SamplingSettings:
    """temperature 0 means greedy; top_k 0 and top_p 1 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def next_token_distribution(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Probabilities (float32, last dim = vocab) the decoder samples from."""
    logits = logits.float()
    if settings.greedy:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits / settings.temperature
    if settings.top_k > 0:
        kth = torch.topk(logits, min(settings.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): keep the smallest prefix of the sorted
        # distribution whose mass reaches top_p (the first token is always kept).
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= settings.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.softmax(dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token id from a 1-D distribution, drawn on the CPU with a CPU generator: the same
    seed gives the same tokens whichever device computed the probabilities."""
    return int(torch.multinomial(probs.detach().float().cpu(), 1, generator=generator).item())


@dataclass
class Generation:
    tokens: list[int]
    """Generated ids (the prompt excluded; a stop token included)."""
    forward_calls: int


@torch.no_grad()
def generate(model: Transformer, prompt: list[int], max_new_tokens: int,
             settings: SamplingSettings = SamplingSettings(), stop_ids: tuple[int, ...] = (),
             generator: torch.Generator | None = None,
             stop_when: Callable[[list[int]], bool] | None = None) -> Generation:
    """Decode up to `max_new_tokens` after `prompt`; stops early at a stop id, when
    `stop_when(generated)` is true (stop strings), or at the model's max_seq_len.
    The prompt is fed in one forward call, then one token per call."""
    if not prompt:
        raise ValueError("generate needs a non-empty prompt")
    room = model.spec.max_seq_len - len(prompt)
    if room <= 0:
        raise ValueError(f"prompt of {len(prompt)} tokens leaves no room in max_seq_len {model.spec.max_seq_len}")
    device = next(model.parameters()).device
    cache = new_cache(model)
    logits = forward_cached(model, torch.tensor([prompt], device=device), cache)[0, -1]
    out: list[int] = []
    calls = 1
    for _ in range(min(max_new_tokens, room)):
        token = sample(next_token_distribution(logits, settings), generator) if not settings.greedy \
            else int(logits.argmax())
        out.append(token)
        if token in stop_ids or len(out) == min(max_new_tokens, room) or (stop_when is not None and stop_when(out)):
            break
        logits = forward_cached(model, torch.tensor([[token]], device=device), cache)[0, -1]
        calls += 1
    return Generation(out, calls)
