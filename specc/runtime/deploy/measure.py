"""Measurements a deployment reports: perplexity on held-out tokens (before and after
quantization), and speculative decoding's acceptance rate and speed-up over plain decoding.

Both read the same held-out token windows, so the numbers of different targets compare.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from specc.runtime.infer.decode import generate
from specc.runtime.infer.scoring import continuation_scores, pad_pairs
from specc.runtime.infer.speculative import speculative_generate
from specc.runtime.shards import open_split
from specc.runtime.train.model import Transformer


def heldout_windows(shard_dir: Path, length: int, count: int, split: str = "validation") -> list[list[int]]:
    """`count` non-overlapping windows of `length` tokens from the start of a token split."""
    tokens = open_split(shard_dir, split)
    available = tokens.num_tokens // length
    if available == 0:
        raise ValueError(f"{shard_dir} {split} split has {tokens.num_tokens} tokens, fewer than one window of {length}")
    return [tokens.window(i * length, length).astype(np.int64).tolist() for i in range(min(count, available))]


@torch.no_grad()
def window_perplexity(model: Transformer, windows: list[list[int]], batch_size: int = 8) -> float:
    """exp(mean NLL) of every token but each window's first."""
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        batch = pad_pairs([(w[:1], w[1:]) for w in chunk], 0, max(len(w) for w in chunk))
        logprob, tokens, _ = continuation_scores(model, batch)
        total -= float(logprob.sum())
        count += int(tokens.sum())
    return math.exp(total / count)


def speculative_report(target: Transformer, draft: Transformer, prompts: list[list[int]], max_new_tokens: int,
                       num_tokens: int) -> dict:
    """Greedy decoding of each prompt, plain and speculative: identical outputs are checked,
    and acceptance rate, target calls and wall-clock speed-up are reported."""
    plain_time = speculative_time = 0.0
    proposed = accepted = calls = tokens = 0
    identical = True
    for prompt in prompts:
        start = time.perf_counter()
        plain = generate(target, prompt, max_new_tokens).tokens
        plain_time += time.perf_counter() - start
        start = time.perf_counter()
        result = speculative_generate(target, draft, prompt, max_new_tokens, num_tokens)
        speculative_time += time.perf_counter() - start
        identical &= result.tokens == plain
        proposed, accepted = proposed + result.proposed, accepted + result.accepted
        calls, tokens = calls + result.target_calls, tokens + len(result.tokens)
    return {"prompts": len(prompts), "num_tokens": num_tokens, "generated_tokens": tokens,
            "acceptance_rate": accepted / proposed if proposed else 0.0,
            "tokens_per_target_call": tokens / calls if calls else 0.0,
            "plain_seconds": plain_time, "speculative_seconds": speculative_time,
            "speedup": plain_time / speculative_time if speculative_time else 0.0,
            "greedy_identical": identical}
