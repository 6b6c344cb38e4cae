"""int8 per-channel and NF4 weight-only quantization: code book, packing, error bounds, storage."""

from __future__ import annotations

import torch
from torch import nn

from align_helpers import tiny_model_spec
from align_helpers import one_cpu_thread  # noqa: F401 (fixtures)
from specc.runtime.deploy.quantize import (
    Int8Linear, NF4Linear, load_quantized_state, nf4_code_book, quantize_model, quantized_state, weight_bytes)
from specc.runtime.infer.decode import generate
from specc.runtime.train.model import build_model

# QLoRA (Dettmers et al. 2023), appendix E / bitsandbytes' NF4 table.
PUBLISHED_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0]


def test_nf4_code_book_matches_published_values():
    torch.testing.assert_close(nf4_code_book(), torch.tensor(PUBLISHED_NF4), atol=1e-6, rtol=0)


def test_int8_per_channel_error_is_at_most_half_a_step():
    linear = nn.Linear(48, 24, bias=True)
    with torch.no_grad():
        linear.weight[3] *= 100.0  # one loud channel must not coarsen the others (per-channel scales)
    q = Int8Linear.from_linear(linear)
    assert q.qweight.dtype == torch.int8 and q.scale.shape == (24,)
    error = (q.dequantize() - linear.weight).abs()
    assert (error <= q.scale[:, None] / 2 + 1e-7).all()
    assert error[0].max() < linear.weight[3].abs().max() / 254
    x = torch.randn(5, 48)
    torch.testing.assert_close(q(x), nn.functional.linear(x, q.dequantize(), linear.bias), atol=1e-5, rtol=1e-5)


def test_nf4_packs_two_codes_per_byte_and_rounds_to_nearest_code():
    linear = nn.Linear(40, 10, bias=False)  # 400 weights: not a multiple of the block size
    q = NF4Linear.from_linear(linear, group_size=64)
    assert q.packed.dtype == torch.uint8 and q.packed.numel() == 448 // 2
    assert q.absmax.numel() == 7
    weight = linear.weight.detach().reshape(-1)
    flat = torch.cat([weight, weight.new_zeros(48)]).view(-1, 64)
    normalised = flat / flat.abs().amax(dim=1, keepdim=True)
    nearest = nf4_code_book()[(normalised[..., None] - nf4_code_book()).abs().argmin(-1)]
    expected = (nearest * flat.abs().amax(dim=1, keepdim=True)).reshape(-1)[:400].view(10, 40)
    torch.testing.assert_close(q.dequantize(), expected)
    gaps = (nf4_code_book()[1:] - nf4_code_book()[:-1]).max()
    assert ((q.dequantize() - linear.weight).abs() <= gaps / 2 * flat.abs().max() + 1e-6).all()


def test_quantized_model_is_smaller_and_close_and_reloads_exactly():
    spec = tiny_model_spec(hidden_size=64, ffn_hidden_size=128)
    reference = build_model(spec, seed=4).eval()
    tokens = torch.randint(0, spec.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = reference(tokens).log_softmax(-1)
    for method, tolerance in (("int8", 0.01), ("nf4", 0.1)):
        model = quantize_model(build_model(spec, seed=4).eval(), method, group_size=64)
        assert weight_bytes(model) < weight_bytes(reference)
        with torch.no_grad():
            approx = model(tokens).log_softmax(-1)
        drift = (approx.exp() * (approx - full)).sum(-1).abs().mean()  # mean |KL|-like gap
        assert drift < tolerance, (method, float(drift))
        rebuilt = load_quantized_state(build_model(spec, seed=99).eval(), method, 64, quantized_state(model))
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(tokens), model(tokens))
        assert generate(rebuilt, [1, 2, 3], 8).tokens == generate(model, [1, 2, 3], 8).tokens
    linears = [m for m in model.modules() if isinstance(m, NF4Linear)]
    assert len(linears) == spec.num_layers * 7
    assert model.output.__class__ is nn.Linear and model.embeddings.tok_embeddings.weight.dtype == torch.float32
