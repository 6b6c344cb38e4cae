"""Model from the spec: attention variants agree with the explicit reference, masks are
causal and windowed, MoE routing honours capacity, init and schedules follow the spec."""

from __future__ import annotations

import math

import pytest
import torch

from train_helpers import VOCAB, make_shards, tiny_model, tiny_schedule

from specc.runtime.train.data import BatchLayout, SequenceStream, local_batch
from specc.runtime.train.model import build_model
from specc.runtime.train.moe import MoE
from specc.runtime.train.optim import build_optimizer, lr_multiplier
from specc.runtime.shards import open_split
from specc.spec.model import ModelSpec
from specc.spec.schedule import ScheduleSpec


def model_of(**overrides):
    return build_model(ModelSpec.model_validate(tiny_model(**overrides)), seed=0).eval()


TOKENS = torch.randint(0, VOCAB - 1, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", [
    {}, {"num_kv_heads": 1}, {"num_kv_heads": None, "position": "learned"}, {"position": "alibi"},
    {"position": "alibi", "sliding_window": 5}, {"sliding_window": 7}, {"position": "sinusoidal", "qkv_bias": True},
    {"attention": "flash"}, {"attention": "flash", "position": "alibi"},
])
def test_sdpa_equals_eager_reference(variant):
    fused, eager = model_of(**variant), model_of(**{**variant, "attention": "eager"})
    with torch.no_grad():
        assert fused(TOKENS).shape == (2, 24, VOCAB)
        torch.testing.assert_close(fused(TOKENS), eager(TOKENS), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [{}, {"position": "alibi"}, {"attention": "eager", "sliding_window": 4}])
def test_attention_is_causal(variant):
    model = model_of(**variant)
    changed = TOKENS.clone()
    changed[:, 15] = (changed[:, 15] + 1) % (VOCAB - 1)
    with torch.no_grad():
        before, after = model(TOKENS), model(changed)
    torch.testing.assert_close(before[:, :15], after[:, :15], rtol=0, atol=0)
    assert not torch.allclose(before[:, 15:], after[:, 15:])


def test_sliding_window_limits_the_receptive_field():
    window = 4
    model = model_of(num_layers=1, sliding_window=window)
    changed = TOKENS.clone()
    changed[:, 0] = (changed[:, 0] + 1) % (VOCAB - 1)
    with torch.no_grad():
        before, after = model(TOKENS), model(changed)
    assert not torch.allclose(before[:, window - 1], after[:, window - 1])  # still inside the window
    torch.testing.assert_close(before[:, window:], after[:, window:], rtol=0, atol=0)


def test_scaled_residual_init():
    model = model_of(num_layers=8, init={"std": 0.02, "scaled_residual": True})
    block = model.layers["0"]
    assert block.attention.wq.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.attention.wo.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert block.feed_forward.w2.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert torch.equal(block.attention_norm.weight, torch.ones(64))
    assert torch.equal(model_of().layers["1"].attention.wq.weight, model_of().layers["1"].attention.wq.weight)


def test_mup_width_scaling():
    spec = ModelSpec.model_validate(tiny_model(hidden_size=128, init={"mup_base_width": 32}))
    model = build_model(spec, seed=0)
    assert model.output_multiplier == pytest.approx(0.25)
    assert model.layers["0"].attention.wq.weight.std().item() == pytest.approx(0.02 * math.sqrt(32 / 128), rel=0.1)
    assert model.layers["0"].attention.scale == pytest.approx(1 / 32)
    optimizer = build_optimizer([model], ScheduleSpec.model_validate(tiny_schedule()), spec, "cpu")
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([3e-3 * 32 / 128, 3e-3, 3e-3])


def moe_layer(capacity_factor: float, **extra) -> MoE:
    spec = ModelSpec.model_validate(tiny_model(moe={"num_experts": 4, "top_k": 2, "capacity_factor": capacity_factor, **extra}))
    return build_model(spec, seed=0).layers["0"].feed_forward


def test_moe_capacity_drops_overflow_tokens():
    x = torch.randn(2, 24, 64, generator=torch.Generator().manual_seed(1))
    roomy, tight = moe_layer(4.0), moe_layer(0.25)
    out_roomy, out_tight = roomy(x), tight(x)
    assert float(roomy.last_dropped_fraction) == 0.0
    # capacity = ceil(0.25 x 48 tokens x top-2 / 4 experts) = 6 slots per expert: 24 of 96 assignments fit
    assert float(tight.last_dropped_fraction) >= 0.7
    assert out_roomy.shape == out_tight.shape == x.shape
    assert not torch.allclose(out_roomy, out_tight)


def test_moe_dense_equivalence_with_one_expert_per_token():
    """top-1 routing with unlimited capacity equals running each token through its expert."""
    layer = moe_layer(100.0)
    layer.top_k = 1
    x = torch.randn(1, 10, 64, generator=torch.Generator().manual_seed(2))
    tokens = x.reshape(-1, 64)
    probs = layer.router(tokens).softmax(-1)
    expected = []
    for t in range(tokens.shape[0]):
        e = int(probs[t].argmax())
        w1, w2, w3 = layer.experts.w1[e], layer.experts.w2[e], layer.experts.w3[e]
        h = torch.nn.functional.silu(tokens[t] @ w1) * (tokens[t] @ w3)
        expected.append((h @ w2) * probs[t, e])
    torch.testing.assert_close(layer(x).reshape(-1, 64), torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_moe_aux_loss_reaches_the_router():
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(3))
    grads = []
    for weight in (0.0, 1.0):
        layer = moe_layer(2.0, aux_loss_weight=weight).train()
        layer(x).sum().backward()
        grads.append(layer.router.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("decay,checks", [
    ("cosine", {0: 0.25, 3: 1.0, 4: 1.0, 52: 0.55, 100: 0.1}),
    ("linear", {3: 1.0, 52: 0.55, 100: 0.1}),
    ("constant", {3: 1.0, 60: 1.0, 100: 1.0}),
    ("wsd", {3: 1.0, 79: 1.0, 80: 1.0, 90: 0.55, 100: 0.1}),
])
def test_lr_schedules(decay, checks):
    schedule = ScheduleSpec.model_validate(tiny_schedule(lr=1.0, min_lr=0.1, warmup_steps=4, decay=decay, decay_fraction=0.2))
    for step, expected in checks.items():
        assert lr_multiplier(step, schedule, 100) == pytest.approx(expected, abs=1e-9), step


def test_data_order_is_deterministic_and_split_over_ranks(tmp_path):
    shard_dir = make_shards(tmp_path / "shards")
    stream = SequenceStream(open_split(shard_dir, "train"), 32, seed=5)
    again = SequenceStream(open_split(shard_dir, "train"), 32, seed=5)
    other = SequenceStream(open_split(shard_dir, "train"), 32, seed=6)
    full = local_batch(stream, BatchLayout(8, 1, 2), step=3, dp_rank=0)
    assert full.shape == (8, 33)
    assert torch.equal(full, local_batch(again, BatchLayout(8, 1, 8), step=3, dp_rank=0))
    assert not torch.equal(full, local_batch(other, BatchLayout(8, 1, 2), step=3, dp_rank=0))
    pieces = [local_batch(stream, BatchLayout(8, 4, 1), step=3, dp_rank=r) for r in range(4)]
    assert torch.equal(torch.cat(pieces), full)
    # every window of an epoch is visited once, then the next epoch reshuffles
    n = stream.num_sequences
    first = stream.sequences(0, n)
    assert len({tuple(row.tolist()) for row in first}) == n
    assert not torch.equal(stream.sequences(n, n), first)
    with pytest.raises(ValueError, match=r"global batch \(8\) is not divisible by dp \(3\) x micro_batch \(1\)"):
        BatchLayout(8, 3, 1)


@pytest.mark.parametrize("size,balance", [(2, True), (4, True), (4, False)])
def test_context_parallel_positions_partition_the_sequence(size, balance):
    from specc.runtime.train.model import ContextParallel

    seq = 32
    local = seq // size
    held = [ContextParallel(None, r, size, balance).positions(local) for r in range(size)]
    assert sorted(torch.cat(held).tolist()) == list(range(seq))
    assert torch.equal(ContextParallel(None, 0, size, balance).all_positions(local), torch.cat(held))
    if balance:  # rank r holds chunk r and its mirror 2cp-1-r: equal causal work per rank
        work = [int((p + 1).sum()) for p in held]
        assert len(set(work)) == 1
    tokens = torch.arange(seq).repeat(2, 1)
    assert torch.equal(ContextParallel(None, 1, size, balance).shard(tokens), held[1].repeat(2, 1))
