"""The decoder-only transformer built from a `ModelSpec` (Llama-style, torchtitan layout).

Module names are stable across parallel layouts (`layers` is a ModuleDict keyed by the
layer index), so a checkpoint written under one layout loads under another and pipeline
stages keep their global parameter names after pruning.

Parameter layout follows the project conventions shared with `specc.plan.params`:
no biases except optional q/k/v biases and LayerNorm biases; swiglu FFNs have three
matrices (w1 gate, w3 up, w2 down), relu/gelu two (w1 up, w2 down).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from specc.runtime.train.feed_forward import FeedForward
from specc.runtime.train.loss import chunk_tokens_for, head_logprobs
from specc.runtime.train.moe import MoE
from specc.spec.attention_window import WINDOW_BLOCK, window_blocks
from specc.spec.capabilities import planned_only_features
from specc.spec.parallel_dims import is_moe_layer
from specc.spec.model import ModelSpec


def build_norm(model: ModelSpec) -> nn.Module:
    if model.norm == "rmsnorm":
        return nn.RMSNorm(model.hidden_size, eps=model.norm_eps)
    return nn.LayerNorm(model.hidden_size, eps=model.norm_eps, bias=True)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary embeddings (Su et al. 2021), rotate-half convention (GPT-NeoX)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, head_dim); cos/sin: (seq, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def sinusoidal_table(max_seq_len: int, hidden: int) -> torch.Tensor:
    """Fixed sine/cosine positions (Vaswani et al. 2017, section 3.5)."""
    position = torch.arange(max_seq_len, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float64) * (-math.log(10000.0) / hidden))
    table = torch.zeros(max_seq_len, hidden, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : hidden // 2]
    return table.float()


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (Press et al. 2022), with the paper's fix for non-powers of two."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = powers(closest)
    if closest < num_heads:
        slopes += powers(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


@dataclass
class ContextParallel:
    """All-gather context parallelism (Llama 3, Dubey et al. 2024, section 3.3.2): each rank
    holds a slice of the sequence; keys and values are all-gathered before attention and the
    mask is built from true token positions, so causal, sliding-window, ALiBi, RoPE and learned
    positions all stay exact. With load balancing the sequence is cut into 2 x cp chunks and
    rank r holds chunks r and 2cp - 1 - r, evening out the causal work."""

    group: object
    rank: int
    size: int
    load_balance: bool = True

    def chunks(self, local_len: int, rank: int | None = None) -> list[tuple[int, int]]:
        """(first global position, length) of each run of consecutive positions rank `rank`
        holds (default: this rank), in the order of its local tokens."""
        rank = self.rank if rank is None else rank
        if not self.load_balance:
            return [(rank * local_len, local_len)]
        chunk = local_len // 2
        return [(rank * chunk, chunk), ((2 * self.size - 1 - rank) * chunk, chunk)]

    def positions(self, local_len: int, rank: int | None = None, device=None) -> torch.Tensor:
        """Global positions of the tokens rank `rank` holds (default: this rank)."""
        return torch.cat([torch.arange(first, first + length, device=device)
                          for first, length in self.chunks(local_len, rank)])

    def all_positions(self, local_len: int, device=None) -> torch.Tensor:
        """Positions of the all-gathered keys, in rank order."""
        return torch.cat([self.positions(local_len, r, device) for r in range(self.size)])

    def shard(self, tokens: torch.Tensor) -> torch.Tensor:
        """This rank's tokens of full sequences (batch, seq)."""
        local_len = tokens.shape[1] // self.size
        return tokens[:, self.positions(local_len, device=tokens.device)]

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return _GatherSequence.apply(x, dim, self)


class _GatherSequence(torch.autograd.Function):
    """All-gather along `dim`; the gradient is the sum over ranks of this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, cp: ContextParallel) -> torch.Tensor:
        ctx.dim, ctx.cp, ctx.local = dim, cp, x.shape[dim]
        parts = [torch.empty_like(x) for _ in range(cp.size)]
        dist.all_gather(parts, x.contiguous(), group=cp.group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # all-reduce + narrow rather than reduce-scatter: gloo has no reduce-scatter
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=ctx.cp.group)
        return total.narrow(ctx.dim, ctx.cp.rank * ctx.local, ctx.local), None, None


class Attention(nn.Module):
    """Multi-head attention with MHA/GQA/MQA, RoPE or ALiBi, and an optional sliding window.

    Under tensor parallelism the projections are column/row sharded and this module sees
    only its local heads: the head count is read from the projection's output width, and
    `head_offset` (set by `apply_tp`) selects this rank's ALiBi slopes.
    """

    def __init__(self, model: ModelSpec):
        super().__init__()
        self.head_dim = model.head_size
        self.num_heads, self.num_kv_heads = model.num_heads, model.kv_heads
        h = model.hidden_size
        self.wq = nn.Linear(h, model.num_heads * self.head_dim, bias=model.qkv_bias)
        self.wk = nn.Linear(h, model.kv_heads * self.head_dim, bias=model.qkv_bias)
        self.wv = nn.Linear(h, model.kv_heads * self.head_dim, bias=model.qkv_bias)
        self.wo = nn.Linear(model.num_heads * self.head_dim, h, bias=False)
        self.position = model.position
        self.implementation = model.attention
        self.kernel = model.attention_kernel
        self.sliding_window = model.sliding_window
        self.window_block = WINDOW_BLOCK
        """Queries per block of the sliding-window kernel (tests shrink it to cut short sequences)."""
        self.dropout = model.dropout
        # muP (Yang et al. 2022, section 4): attention logits scaled by 1/d instead of 1/sqrt(d).
        self.scale = (1.0 / self.head_dim) if model.init.mup_base_width else (1.0 / math.sqrt(self.head_dim))
        self.head_offset = 0
        self.cp: ContextParallel | None = None
        if model.position == "alibi":
            self.register_buffer("slopes", alibi_slopes(model.num_heads), persistent=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        if self.cp is not None:
            q_pos, k_pos = self.cp.positions(seq, device=x.device), self.cp.all_positions(seq, device=x.device)
        else:
            q_pos = k_pos = None
        if rope is not None:
            cos, sin = (rope[0][:seq], rope[1][:seq]) if q_pos is None else (rope[0][q_pos], rope[1][q_pos])
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.cp is not None:
            k, v = self.cp.gather(k, dim=2), self.cp.gather(v, dim=2)
        dropout = self.dropout if self.training else 0.0
        if self.uses_window_kernel(k.shape[2]):
            out = self.window_attention(q, k, v, dropout)
        else:
            # a window at least as long as the keys masks nothing that causal attention keeps
            out = self._attend(q, k, v, self._mask(q.shape[1], q_pos, k_pos, seq, x.device, q.dtype, None), dropout)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))

    def uses_window_kernel(self, num_keys: int) -> bool:
        """A window shorter than the keys runs the block kernel; a longer one is plain causal."""
        return self.sliding_window is not None and self.sliding_window < num_keys

    def _attend(self, q, k, v, mask, dropout: float) -> torch.Tensor:
        """One attention call: eager, or SDPA (the causal flash kernel when there is no mask)."""
        if self.implementation == "eager":
            return self._eager(q, k, v, mask, dropout)
        with self._kernel_choice(mask):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=dropout,
                scale=self.scale, enable_gqa=q.shape[1] != k.shape[1])

    def window_attention(self, q, k, v, dropout: float) -> torch.Tensor:
        """Sliding-window attention that computes only the keys a block of queries can see.

        A dense call with a window mask computes every query against every key and throws most
        away. Here the queries are cut into blocks (`specc.spec.attention_window`); each block
        attends, in one masked call, only the span from its first query's oldest visible key to
        its last query, so a query costs at most `window_block + window - 1` keys whatever the
        sequence length. Rows of a block see exactly the keys the dense mask allows them (same
        `_mask`, over true positions), so the result is the dense masked attention's.

        Context parallel: the all-gathered keys are put back in position order, and each of this
        rank's runs of consecutive positions is cut into blocks of its own.
        """
        seq = q.shape[2]
        runs = [(0, seq)] if self.cp is None else self.cp.chunks(seq)
        if self.cp is not None and self.cp.load_balance:
            order = torch.argsort(self.cp.all_positions(seq, device=q.device))
            k, v = k.index_select(2, order), v.index_select(2, order)
        masks: dict[tuple[int, int], torch.Tensor] = {}
        outputs, offset = [], 0
        for start, length in runs:
            for first, stop, key in window_blocks(start, length, self.sliding_window, self.window_block):
                # The mask depends only on the block's shape: the steady-state blocks share one.
                shape = (stop - first, first - key)
                if shape not in masks:
                    q_pos = torch.arange(first, stop, device=q.device)
                    k_pos = torch.arange(key, stop, device=q.device)
                    masks[shape] = self._mask(q.shape[1], q_pos, k_pos, seq, q.device, q.dtype, self.sliding_window)
                rows = slice(offset + first - start, offset + stop - start)
                outputs.append(self._attend(q[:, :, rows], k[:, :, key:stop], v[:, :, key:stop], masks[shape], dropout))
            offset += length
        return torch.cat(outputs, dim=2)

    def _kernel_choice(self, mask):
        """`attention: flash` or `attention_kernel: flash2` pins SDPA to the flash (FlashAttention-2)
        kernel, `attention_kernel: cudnn` to cuDNN's (validate admits it on CUDA only, R250); masks
        (ALiBi, windows, context parallel) need the memory-efficient or math kernels, so they keep
        SDPA's own choice."""
        if mask is not None or (self.implementation != "flash" and self.kernel == "auto"):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION if self.kernel == "cudnn" else SDPBackend.FLASH_ATTENTION])

    def _mask(self, local_heads: int, q_pos, k_pos, seq: int, device, dtype, window: int | None) -> torch.Tensor | None:
        """None for plain causal attention (lets SDPA pick flash kernels); else a bool mask or an
        ALiBi bias over true positions (which differ from row/column indices under context parallel)."""
        if self.position != "alibi" and window is None and q_pos is None:
            return None
        i = (torch.arange(seq, device=device) if q_pos is None else q_pos)[:, None]
        j = (torch.arange(seq, device=device) if k_pos is None else k_pos)[None, :]
        allowed = j <= i
        if window is not None:
            allowed = allowed & (i - j < window)
        if self.position != "alibi":
            return allowed
        slopes = self.slopes[self.head_offset:self.head_offset + local_heads].to(dtype)
        bias = -slopes[:, None, None] * (i - j).to(dtype)
        return bias.masked_fill(~allowed, float("-inf"))

    def _eager(self, q, k, v, mask, dropout: float) -> torch.Tensor:
        """softmax(QK^T)V materialising the scores (the reference the fused kernels must match)."""
        if k.shape[1] != q.shape[1]:
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if mask is None:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        probs = F.dropout(scores.float().softmax(dim=-1).to(q.dtype), p=dropout, training=dropout > 0)
        return probs @ v


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + ffn(norm(x)) (dense FFN or MoE)."""

    def __init__(self, model: ModelSpec, layer_id: int):
        super().__init__()
        self.attention_norm = build_norm(model)
        self.attention = Attention(model)
        self.ffn_norm = build_norm(model)
        self.moe = is_moe_layer(model, layer_id)
        if self.moe:
            self.feed_forward = MoE(model)
        else:
            self.feed_forward = FeedForward(model.hidden_size, model.ffn_hidden_size, model.activation)
        self.dropout = nn.Dropout(model.dropout)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), rope))
        return x + self.dropout(self.feed_forward(self.ffn_norm(x)))


class Embeddings(nn.Module):
    """Token embedding plus learned or sinusoidal positions; one module so that TP/SP can
    reshard its output (replicated -> sequence-sharded) in one place."""

    def __init__(self, model: ModelSpec):
        super().__init__()
        self.tok_embeddings = nn.Embedding(model.vocab_size, model.hidden_size)
        self.pos_embeddings = nn.Embedding(model.max_seq_len, model.hidden_size) if model.position == "learned" else None
        if model.position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(model.max_seq_len, model.hidden_size), persistent=False)
        else:
            self.sinusoid = None
        self.dropout = nn.Dropout(model.dropout)
        self.cp: ContextParallel | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        seq = tokens.shape[1]
        positions = (torch.arange(seq, device=tokens.device) if self.cp is None
                     else self.cp.positions(seq, device=tokens.device))
        if self.pos_embeddings is not None:
            h = h + self.pos_embeddings(positions)
        if self.sinusoid is not None:
            h = h + self.sinusoid[positions].to(h.dtype)
        return self.dropout(h)


class Transformer(nn.Module):
    """Embeddings -> blocks -> final norm -> output head. Any of these may be pruned to
    None by `prune_to_stage` for pipeline parallelism; forward then passes activations
    through what is left."""

    def __init__(self, model: ModelSpec):
        super().__init__()
        unbuilt = planned_only_features(model)
        if unbuilt:  # validate's R295 says so first; never build a different model silently
            raise ValueError("specc's runtime does not build " + "; ".join(f"model.{name}: {why}" for name, why in unbuilt))
        self.spec = model
        self.embeddings = Embeddings(model)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(model, i) for i in range(model.num_layers)})
        self.norm = build_norm(model)
        self.output = nn.Linear(model.hidden_size, model.vocab_size, bias=False)
        if model.tie_embeddings:
            self.output.weight = self.embeddings.tok_embeddings.weight
        # muP output multiplier 1/width_mult (Yang et al. 2022, Table 3).
        base = model.init.mup_base_width
        self.output_multiplier = (base / model.hidden_size) if base else 1.0
        self.loss_chunk_tokens: int | None = None
        """Tokens per chunk of the fused head + log-probabilities (`parallel.loss: chunked`), set by
        `set_loss`; None computes the full logits."""
        if model.position == "rope":
            cos, sin = rope_tables(model.head_size, model.max_seq_len, model.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None

    def forward(self, h: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (batch, seq) -> logits on the last stage; hidden states in between. With `targets`
        (batch, seq), the last stage returns log p(target) per position in fp32 instead of logits:
        chunked (`loss_chunk_tokens` set, see `specc.runtime.train.loss`) or from the full logits.
        The head's weight is read inside forward so that FSDP has gathered it."""
        if self.embeddings is not None:
            h = self.embeddings(h)
        rope = (self.rope_cos, self.rope_sin) if self.rope_cos is not None else None
        for layer in self.layers.values():
            h = layer(h, rope)
        if self.norm is not None:
            h = self.norm(h)
        if self.output is None:
            return h
        if targets is not None and self.loss_chunk_tokens is not None:
            return head_logprobs(h, self.output.weight, targets, self.loss_chunk_tokens, self.output_multiplier)
        h = self.output(h)
        if self.output_multiplier != 1.0:
            h = h * self.output_multiplier
        if targets is not None:
            return -F.cross_entropy(h.float().transpose(1, 2), targets, reduction="none")
        return h

    def set_loss(self, loss: str, chunk_tokens: int) -> None:
        """How `forward(tokens, targets)` computes log-probabilities: `parallel.loss` and `loss_chunk_tokens`."""
        self.loss_chunk_tokens = chunk_tokens_for(loss, chunk_tokens)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Seeded normal init in module order, identical on every rank and layout.

        std from the spec; output projections (wo, w2) scaled by 1/sqrt(2 L) (GPT-2);
        with muP, hidden matrices use std * sqrt(base/width) (fan-in scaling).
        """
        spec = self.spec.init
        generator = torch.Generator().manual_seed(seed)
        width_scale = math.sqrt(spec.mup_base_width / self.spec.hidden_size) if spec.mup_base_width else 1.0
        residual_scale = 1.0 / math.sqrt(2 * self.spec.num_layers) if spec.scaled_residual else 1.0
        for name, param in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or "norm" in name:
                param.copy_(torch.zeros_like(param) if leaf == "bias" else torch.ones_like(param))
                continue
            std = spec.std
            if "embeddings" not in name and not name.startswith("output"):
                std *= width_scale
            if name.endswith(("wo.weight", "w2.weight", "experts.w2")):
                std *= residual_scale
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float32) * std)


def build_model(model: ModelSpec, seed: int) -> Transformer:
    """The full model on CPU in fp32, initialised from the seed (layouts shard it afterwards)."""
    transformer = Transformer(model)
    transformer.init_weights(seed)
    return transformer


def num_parameters(module: nn.Module) -> int:
    """Distinct parameters (a tied embedding counted once), in full (unsharded) size."""
    return sum(p.numel() for p in module.parameters())
