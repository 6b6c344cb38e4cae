"""The chunked head + log-probabilities (`specc.runtime.train.loss`) equal the full logits' ones:
values and gradients of hidden states and head weight, in fp32, in bf16 (as accurate as the full
path against an fp64 reference), under autocast, with a logit scale (muP), for chunk sizes that
do and do not divide the tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specc.runtime.train.loss import head_logprobs
from specc.runtime.train.model import Transformer
from specc.spec.model import ModelSpec

BATCH, SEQ, HIDDEN, VOCAB = 2, 37, 48, 301


def inputs(dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(BATCH, SEQ, HIDDEN, generator=generator, dtype=torch.float64)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator, dtype=torch.float64) * 0.2
    targets = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    upstream = torch.randn(BATCH, SEQ, generator=generator, dtype=torch.float64)  # an arbitrary downstream loss
    return hidden.to(dtype), weight.to(dtype), targets, upstream


def full_logprobs(hidden, weight, targets, scale=1.0):
    """The full path: logits in the compute dtype, upcast, cross-entropy per token."""
    logits = (hidden @ weight.t()) * scale
    return -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


def values_and_grads(function, hidden, weight, targets, upstream, **kwargs):
    hidden, weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logprobs = function(hidden, weight, targets, **kwargs)
    (logprobs.double() * upstream).sum().backward()
    return logprobs.detach().double(), hidden.grad.double(), weight.grad.double()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("chunk_tokens", [1, 16, 37, 74, 4096])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_fp32_equals_full_logits(chunk_tokens, scale):
    hidden, weight, targets, upstream = inputs(torch.float32)
    full = values_and_grads(full_logprobs, hidden, weight, targets, upstream, scale=scale)
    chunked = values_and_grads(head_logprobs, hidden, weight, targets, upstream, chunk_tokens=chunk_tokens,
                               scale=scale)
    for name, ours, reference in zip(("logprobs", "hidden grad", "weight grad"), chunked, full):
        assert relative(ours, reference) < 1e-5, name


@pytest.mark.parametrize("chunk_tokens", [16, 4096])
def test_bf16_as_accurate_as_full_logits(chunk_tokens):
    """Against fp64 truth, the chunked bf16 values and gradients are within twice the full bf16
    path's own rounding error (measured: the same or smaller)."""
    hidden, weight, targets, upstream = inputs(torch.bfloat16)
    truth = values_and_grads(full_logprobs, hidden.double(), weight.double(), targets, upstream)
    full = values_and_grads(full_logprobs, hidden, weight, targets, upstream)
    chunked = values_and_grads(head_logprobs, hidden, weight, targets, upstream, chunk_tokens=chunk_tokens)
    for name, ours, theirs, exact in zip(("logprobs", "hidden grad", "weight grad"), chunked, full, truth):
        assert relative(ours, exact) <= 2 * relative(theirs, exact) + 1e-6, name


def test_autocast_runs_the_head_in_bf16_with_fp32_gradients():
    """Single-device mixed precision: fp32 weights under bf16 autocast, as `autocast_context` runs them."""
    hidden, weight, targets, upstream = inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = values_and_grads(lambda h, w, t: full_logprobs(h, w, t), hidden, weight, targets, upstream)
        chunked = values_and_grads(head_logprobs, hidden, weight, targets, upstream, chunk_tokens=10)
    hidden_bf16, weight_bf16 = hidden.bfloat16(), weight.bfloat16()
    assert torch.equal(chunked[0], values_and_grads(head_logprobs, hidden_bf16, weight_bf16, targets, upstream,
                                                    chunk_tokens=10)[0])  # really computed in bf16
    for name, ours, reference in zip(("logprobs", "hidden grad", "weight grad"), chunked, full):
        assert relative(ours, reference) < 2e-2, name


def test_no_grad_forward_matches():
    hidden, weight, targets, _ = inputs(torch.float32)
    with torch.no_grad():
        assert relative(head_logprobs(hidden, weight, targets, 8).double(),
                        full_logprobs(hidden, weight, targets).double()) < 1e-6


def test_model_head_switches_between_chunked_and_full():
    """`Transformer.forward(tokens, targets)` gives the same log-probabilities either way, and plain
    `forward(tokens)` still returns logits."""
    spec = ModelSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_hidden_size=64, vocab_size=97, max_seq_len=16)
    model = Transformer(spec)
    model.init_weights(0)
    tokens = torch.randint(0, 97, (2, 16))
    model.set_loss("full", 1024)
    assert model.loss_chunk_tokens is None
    full = model(tokens[:, :-1], targets=tokens[:, 1:])
    model.set_loss("auto", 5)  # the torch runtime's auto is chunked
    assert model.loss_chunk_tokens == 5
    chunked = model(tokens[:, :-1], targets=tokens[:, 1:])
    assert relative(chunked.detach().double(), full.detach().double()) < 1e-6
    assert model(tokens).shape == (2, 16, 97)
