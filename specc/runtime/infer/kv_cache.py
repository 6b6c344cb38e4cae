"""Incremental (KV-cached) forward pass over the training `Transformer`'s own modules and weights.

The training model recomputes attention over the whole sequence on every call; decoding
one token at a time that way costs O(n^2) per token. Here each layer's keys and values are
kept in a `KVCache`, so a step feeds only the new tokens at positions
[cache.length, cache.length + n) and attends to everything cached (Pope et al. 2022,
section 3.1). No weights are copied: the attention, norm and feed-forward modules of the
given model are called directly, and `tests/align/test_infer_kv_cache.py` checks that
cached logits equal the full forward's logits for every position encoding.
"""

from __future__ import annotations

import torch
from torch import nn

from specc.runtime.train.model import Attention, Transformer, apply_rope


class KVCache:
    """Per-layer keys/values of shape (batch, kv_heads, length, head_dim); truncatable so that
    speculative decoding can roll back rejected draft tokens."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's k/v for `layer` and return everything cached for it."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def truncate(self, length: int) -> None:
        """Forget every position >= length."""
        for layer, k in enumerate(self.keys):
            if k is not None:
                self.keys[layer] = k[:, :, :length]
                self.values[layer] = self.values[layer][:, :, :length]


def _cached_attention(attention: Attention, x: torch.Tensor, rope, cache: KVCache, layer: int,
                      start: int) -> torch.Tensor:
    """Attention of the new positions [start, start + n) over all cached positions.

    Materialises the (n x total) scores: decoding steps are short, so the eager path is as
    fast as a fused kernel here and handles ALiBi, sliding windows and GQA in one place.
    """
    batch, n, _ = x.shape
    head_dim = attention.head_dim
    q = attention.wq(x).view(batch, n, -1, head_dim).transpose(1, 2)
    k = attention.wk(x).view(batch, n, -1, head_dim).transpose(1, 2)
    v = attention.wv(x).view(batch, n, -1, head_dim).transpose(1, 2)
    if rope is not None:
        cos, sin = rope[0][start:start + n], rope[1][start:start + n]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = cache.append(layer, k, v)
    # A sliding window: keys older than the first new position's window are masked for every new
    # position, so they are left out of the product (a decoding step costs the window, not the
    # whole cache). The mask below is the training kernel's: j <= i and i - j < window.
    first = 0 if attention.sliding_window is None else max(0, start - attention.sliding_window + 1)
    k, v = k[:, :, first:], v[:, :, first:]
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    i = torch.arange(start, start + n, device=x.device)[:, None]
    j = torch.arange(first, first + k.shape[2], device=x.device)[None, :]
    allowed = j <= i
    if attention.sliding_window is not None:
        allowed = allowed & (i - j < attention.sliding_window)
    scores = (q @ k.transpose(-2, -1)).float() * attention.scale
    if attention.position == "alibi":
        slopes = attention.slopes[attention.head_offset:attention.head_offset + q.shape[1]].float()
        scores = scores - slopes[:, None, None] * (i - j).float()
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(dim=-1).to(q.dtype) @ v
    return attention.wo(out.transpose(1, 2).reshape(batch, n, -1))


def _embed(model: Transformer, tokens: torch.Tensor, start: int) -> torch.Tensor:
    embeddings = model.embeddings
    h = embeddings.tok_embeddings(tokens)
    n = tokens.shape[1]
    if embeddings.pos_embeddings is not None:
        h = h + embeddings.pos_embeddings(torch.arange(start, start + n, device=tokens.device))
    if embeddings.sinusoid is not None:
        h = h + embeddings.sinusoid[start:start + n].to(h.dtype)
    return h


@torch.no_grad()
def forward_cached(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (batch, n, vocab) for `tokens` (batch, n) placed after the cached positions.

    The model must be in eval mode (no dropout) and whole (not pipeline-pruned).
    """
    start = cache.length
    if start + tokens.shape[1] > model.spec.max_seq_len:
        raise ValueError(f"sequence of {start + tokens.shape[1]} tokens exceeds the model's max_seq_len "
                         f"({model.spec.max_seq_len})")
    h = _embed(model, tokens, start)
    rope = (model.rope_cos, model.rope_sin) if model.rope_cos is not None else None
    for index, block in enumerate(model.layers.values()):
        h = h + _cached_attention(block.attention, block.attention_norm(h), rope, cache, index, start)
        h = h + block.feed_forward(block.ffn_norm(h))
    h = model.output(model.norm(h))
    if model.output_multiplier != 1.0:
        h = h * model.output_multiplier
    return h


def new_cache(model: nn.Module) -> KVCache:
    return KVCache(len(model.layers))
