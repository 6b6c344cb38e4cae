"""Speculative decoding (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023, Algorithm 2).

Each step the draft model proposes `num_tokens` tokens x_1..x_g from its distributions
q_1..q_g; the target scores the committed context plus all proposals in one forward pass,
giving p_1..p_{g+1}. Proposal i is accepted with probability min(1, p_i(x_i) / q_i(x_i));
at the first rejection a token is drawn from norm(max(0, p_i - q_i)) and the step ends; if
all are accepted a bonus token is drawn from p_{g+1}. Every emitted token is then
distributed exactly as the target's own sampling distribution (Leviathan et al. 2023,
Theorem 3.5 / appendix A.1). With greedy settings p and q are one-hots on the argmax, so
the rule accepts exactly the proposals the target would have chosen and the output is the
target's greedy output token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specc.runtime.infer.decode import SamplingSettings, next_token_distribution, sample
from specc.runtime.infer.kv_cache import KVCache, forward_cached, new_cache
from specc.runtime.train.model import Transformer


@dataclass
class SpeculativeResult:
    tokens: list[int]
    proposed: int
    """Draft tokens proposed in total."""
    accepted: int
    """Draft tokens the target accepted."""
    target_calls: int
    """Target forward passes (plain decoding needs one per token)."""

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def accept_or_resample(p: torch.Tensor, q: torch.Tensor, proposal: int,
                       generator: torch.Generator | None) -> tuple[bool, int]:
    """The rejection rule for one proposal: (accepted, token to emit).

    p, q: target and draft distributions at this position; the proposal was drawn from q.
    """
    p_x, q_x = float(p[proposal]), float(q[proposal])
    ratio = p_x / q_x if q_x > 0 else 1.0
    if float(torch.rand((), generator=generator)) < min(1.0, ratio):
        return True, proposal
    residual = torch.clamp(p - q, min=0.0)
    total = residual.sum()
    # p == q up to rounding leaves no residual mass; p is then the right distribution.
    return False, sample(residual / total if total > 0 else p, generator)


def _feed(model: Transformer, cache: KVCache, committed: list[int], extra: list[int], device) -> torch.Tensor:
    """Feed the committed tokens the cache has not seen yet, then `extra`; logits of what was fed."""
    fresh = committed[cache.length:] + extra
    return forward_cached(model, torch.tensor([fresh], device=device), cache)[0]


@torch.no_grad()
def speculative_generate(target: Transformer, draft: Transformer, prompt: list[int], max_new_tokens: int,
                         num_tokens: int, settings: SamplingSettings = SamplingSettings(),
                         stop_ids: tuple[int, ...] = (), generator: torch.Generator | None = None
                         ) -> SpeculativeResult:
    """Decode like `decode.generate(target, ...)` with draft proposals verified by the target.

    Invariant between steps: both caches hold every committed token except the last one,
    whose logits the next step computes.
    """
    if target.spec.vocab_size != draft.spec.vocab_size:
        raise ValueError(f"draft vocab_size ({draft.spec.vocab_size}) != target vocab_size "
                         f"({target.spec.vocab_size}): they must share the tokenizer")
    limit = min(target.spec.max_seq_len, draft.spec.max_seq_len)
    budget = min(max_new_tokens, limit - len(prompt))
    if budget <= 0:
        raise ValueError(f"prompt of {len(prompt)} tokens leaves no room in max_seq_len {limit}")
    device = next(target.parameters()).device
    target_cache, draft_cache = new_cache(target), new_cache(draft)
    committed, out = list(prompt), []
    proposed = accepted = calls = 0
    while len(out) < budget:
        gamma = min(num_tokens, budget - len(out) - 1, limit - len(committed) - 1)
        proposals, q_dists = [], []
        draft_cache.truncate(len(committed) - 1)
        logits = _feed(draft, draft_cache, committed[:-1], [committed[-1]], device)[-1]
        for i in range(max(gamma, 0)):
            q = next_token_distribution(logits, settings)
            token = sample(q, generator) if not settings.greedy else int(q.argmax())
            proposals.append(token)
            q_dists.append(q)
            if i + 1 < gamma:
                logits = forward_cached(draft, torch.tensor([[token]], device=device), draft_cache)[0, -1]
        target_cache.truncate(len(committed) - 1)
        target_logits = _feed(target, target_cache, committed[:-1], [committed[-1]] + proposals, device)
        calls += 1
        p_dists = next_token_distribution(target_logits[-(len(proposals) + 1):], settings)
        emitted = []
        for i, token in enumerate(proposals):
            ok, chosen = accept_or_resample(p_dists[i], q_dists[i], token, generator)
            emitted.append(chosen)
            accepted += ok
            if not ok or chosen in stop_ids:
                break
        else:
            bonus = p_dists[len(proposals)]
            emitted.append(sample(bonus, generator) if not settings.greedy else int(bonus.argmax()))
        proposed += len(proposals)
        for token in emitted:
            out.append(token)
            committed.append(token)
            if token in stop_ids or len(out) == budget:
                return SpeculativeResult(out, proposed, accepted, calls)
    return SpeculativeResult(out, proposed, accepted, calls)
