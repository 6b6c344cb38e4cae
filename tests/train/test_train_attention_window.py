"""The sliding-window kernel: equal to one dense masked attention call (forward and gradients),
with every position encoding, GQA/MQA, recompute and context-parallel ranks; used whenever a
window is shorter than the sequence; and computing exactly the keys the planner charges."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from train_helpers import VOCAB, tiny_model

from specc.plan.params import flops_per_token
from specc.runtime.train.model import ContextParallel, build_model
from specc.runtime.train.parallelize import apply_ac
from specc.spec.attention_window import WINDOW_BLOCK, executed_keys_per_query, window_blocks
from specc.spec.model import ModelSpec

TOKENS = torch.randint(0, VOCAB - 1, (2, 24), generator=torch.Generator().manual_seed(0))
DENSE = 10**9
"""A block longer than any sequence: one masked call over all keys, the dense reference."""


def windowed_model(block: int, recompute: str = "none", **overrides):
    model = build_model(ModelSpec.model_validate(tiny_model(**overrides)), seed=0)
    for layer in model.layers.values():
        layer.attention.window_block = block
    apply_ac(model, recompute)
    return model


def forward_backward(model) -> tuple[torch.Tensor, list[torch.Tensor]]:
    logits = model(TOKENS)
    logits.float().square().mean().backward()
    return logits.detach(), [p.grad for p in model.parameters()]


def assert_same(ours, reference):
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-5, atol=1e-6)
    for grad, ref in zip(ours[1], reference[1]):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", [
    {"sliding_window": 5}, {"sliding_window": 7, "num_kv_heads": 1}, {"sliding_window": 6, "position": "alibi"},
    {"sliding_window": 4, "position": "learned", "num_kv_heads": None}, {"sliding_window": 9, "position": "sinusoidal"},
    {"sliding_window": 5, "attention": "eager"}, {"sliding_window": 8, "attention": "flash", "position": "alibi"},
], ids=lambda v: "-".join(f"{k}={v[k]}" for k in sorted(v)))
@pytest.mark.parametrize("block", [3, 10])
def test_window_kernel_equals_dense_masked_attention(variant, block):
    """Blocks shorter and longer than the window, the last block cut short (24 = 2 x 10 + 4)."""
    assert_same(forward_backward(windowed_model(block, **variant)), forward_backward(windowed_model(DENSE, **variant)))


@pytest.mark.parametrize("recompute", ["full", "selective"])
def test_window_kernel_under_recompute(recompute):
    variant = {"sliding_window": 6, "position": "alibi", "num_kv_heads": 1}
    assert_same(forward_backward(windowed_model(4, recompute, **variant)), forward_backward(windowed_model(DENSE, **variant)))


@pytest.mark.parametrize("size,load_balance", [(2, True), (3, True), (2, False)])
def test_window_kernel_on_context_parallel_ranks(size, load_balance):
    """Each rank's queries over the all-gathered keys (in rank order, as `ContextParallel.gather`
    leaves them) give that rank's rows of the dense attention, and the ranks' gradients add up
    to the dense gradients."""
    seq, window = 24, 5
    attention = windowed_model(4, sliding_window=window, position="alibi").layers["0"].attention
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, heads, seq, 16, generator=generator, requires_grad=True) for heads in (4, 2, 2))
    attention.window_block = DENSE
    dense = attention.window_attention(q, k, v, 0.0)
    dense_grads = torch.autograd.grad(dense.square().sum(), (q, k, v))
    attention.window_block = 4
    total = 0.0
    for rank in range(size):
        cp = ContextParallel(group=None, rank=rank, size=size, load_balance=load_balance)
        attention.cp = cp
        local = cp.positions(seq // size)
        gathered = cp.all_positions(seq // size)
        out = attention.window_attention(q[:, :, local], k[:, :, gathered], v[:, :, gathered], 0.0)
        torch.testing.assert_close(out, dense[:, :, local], rtol=1e-5, atol=1e-6)
        total = total + out.square().sum()
    for grad, ref in zip(torch.autograd.grad(total, (q, k, v)), dense_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


class AttentionCalls(TorchDispatchMode):
    """(query rows, keys, mask given) of every forward attention kernel call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if "scaled_dot_product" in name and "backward" not in name:
            q, k = args[0], args[1]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 and isinstance(args[3], torch.Tensor) else None)
            self.calls.append((q.shape[-2], k.shape[-2], mask is not None))
        return func(*args, **kwargs)


@pytest.mark.parametrize("window,block", [(5, 8), (7, 4), (16, 8)])
def test_window_kernel_skips_the_masked_blocks(window, block):
    """With a window, no call sees more than block + window - 1 keys (no dense masked call), and
    the query-key pairs computed are `executed_keys_per_query` per query."""
    seq, layers = TOKENS.shape[1], 2
    model = windowed_model(block, sliding_window=window, num_layers=layers)
    with AttentionCalls() as mode, torch.no_grad():
        model(TOKENS)
    assert len(mode.calls) == layers * len(list(window_blocks(0, seq, window, block)))
    assert all(has_mask for _, _, has_mask in mode.calls)
    assert max(keys for _, keys, _ in mode.calls) <= block + window - 1 < seq
    pairs = sum(rows * keys for rows, keys, _ in mode.calls) / layers
    assert pairs == seq * executed_keys_per_query(seq, window, block)


def test_planner_charges_the_keys_the_runtime_block_computes():
    """At the runtime's own block (WINDOW_BLOCK) over several blocks, the planner's executed
    attention FLOPs per token are 12 L H d x the keys per query the kernel really computes."""
    seq, window = 3 * WINDOW_BLOCK + 40, 100
    spec = ModelSpec.model_validate(tiny_model(sliding_window=window, max_seq_len=seq, num_layers=1))
    attention = build_model(spec, seed=0).layers["0"].attention
    assert attention.window_block == WINDOW_BLOCK
    q, k, v = (torch.randn(1, heads, seq, spec.head_size) for heads in (spec.num_heads, spec.kv_heads, spec.kv_heads))
    with AttentionCalls() as mode, torch.no_grad():
        attention.window_attention(q, k, v, 0.0)
    keys_per_query = sum(rows * keys for rows, keys, _ in mode.calls) / seq
    flops = flops_per_token(spec, seq)
    assert flops.kernel_attention == pytest.approx(12 * spec.num_heads * spec.head_size * keys_per_query, rel=1e-12)
    assert flops.attention < flops.kernel_attention < 12 * spec.num_heads * spec.head_size * (seq + 1) / 2


def test_window_as_long_as_the_sequence_is_plain_causal_attention():
    model = windowed_model(4, sliding_window=TOKENS.shape[1])
    with AttentionCalls() as mode, torch.no_grad():
        model(TOKENS)
    assert mode.calls == [(24, 24, False)] * 2  # the causal kernel, no mask
