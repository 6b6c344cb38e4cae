"""KV-cache decoding must reproduce the full forward pass exactly (up to float rounding)."""

from __future__ import annotations

import pytest
import torch

from specc.runtime.infer.decode import SamplingSettings, generate, next_token_distribution
from specc.runtime.infer.kv_cache import forward_cached, new_cache
from specc.runtime.train.model import build_model
from align_helpers import tiny_model_spec
from align_helpers import one_cpu_thread  # noqa: F401 (fixtures)

VARIANTS = {
    "rope-gqa": {},
    "alibi": {"position": "alibi", "num_kv_heads": 4},
    "learned-mqa": {"position": "learned", "num_kv_heads": 1, "tie_embeddings": False},
    "sinusoidal-layernorm-gelu": {"position": "sinusoidal", "norm": "layernorm", "activation": "gelu"},
    "sliding-window": {"sliding_window": 5},
    "qkv-bias-mup": {"qkv_bias": True, "init": {"mup_base_width": 16}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_logits_equal_full_forward(variant):
    model = build_model(tiny_model_spec(**VARIANTS[variant]), seed=3).eval()
    tokens = torch.randint(0, 384, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
    cache = new_cache(model)
    pieces = [forward_cached(model, tokens[:, :7], cache)]
    for position in range(7, 23, 4):  # mixed chunk sizes: a prompt, then several tokens at once
        pieces.append(forward_cached(model, tokens[:, position:position + 4], cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)


def test_cache_truncate_rolls_back():
    model = build_model(tiny_model_spec(), seed=1).eval()
    tokens = torch.randint(0, 384, (1, 12), generator=torch.Generator().manual_seed(1))
    cache = new_cache(model)
    forward_cached(model, tokens[:, :10], cache)
    cache.truncate(6)
    assert cache.length == 6
    again = forward_cached(model, tokens[:, 6:12], cache)
    with torch.no_grad():
        torch.testing.assert_close(again, model(tokens)[:, 6:12], atol=1e-5, rtol=1e-4)


def test_greedy_generation_matches_argmax_of_full_forward():
    model = build_model(tiny_model_spec(), seed=2).eval()
    prompt = [5, 17, 42, 99]
    out = generate(model, prompt, max_new_tokens=12).tokens
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            sequence.append(int(model(torch.tensor([sequence]))[0, -1].argmax()))
    assert out == sequence[len(prompt):]


def test_generation_stops_at_stop_id_and_context():
    model = build_model(tiny_model_spec(max_seq_len=16), seed=2).eval()
    free = generate(model, [1, 2, 3], max_new_tokens=50).tokens
    assert len(free) == 13  # 16 - 3: the context limit, not max_new_tokens
    stopped = generate(model, [1, 2, 3], max_new_tokens=50, stop_ids=(free[4],)).tokens
    assert stopped == free[:free.index(free[4]) + 1]


def test_sampling_filters():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])
    top_k = next_token_distribution(logits, SamplingSettings(temperature=1.0, top_k=2))
    assert (top_k[2:] == 0).all() and torch.isclose(top_k.sum(), torch.tensor(1.0))
    nucleus = next_token_distribution(logits, SamplingSettings(temperature=1.0, top_p=0.7))
    full = logits.softmax(-1)
    assert full[0] < 0.7 <= full[0] + full[1]
    assert (nucleus[2:] == 0).all() and nucleus[1] > 0
    greedy = next_token_distribution(logits, SamplingSettings())
    assert greedy.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_windowed_decoding_and_speculation_follow_the_training_kernel():
    """With a sliding window, token-by-token decoding (keys older than the window left out) and
    speculative decoding (rollbacks across the window's edge) pick what the training kernel's
    full forward, cut into several query blocks, predicts."""
    from specc.runtime.infer.speculative import speculative_generate

    target = build_model(tiny_model_spec(sliding_window=5), seed=4).eval()
    draft = build_model(tiny_model_spec(sliding_window=3, num_layers=1), seed=6).eval()
    for model in (target, draft):
        for block in model.layers.values():
            block.attention.window_block = 4
    prompt = [5, 17, 42, 99, 7, 3]
    out = generate(target, prompt, max_new_tokens=20).tokens
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            sequence.append(int(target(torch.tensor([sequence]))[0, -1].argmax()))
    assert out == sequence[len(prompt):]
    assert speculative_generate(target, draft, prompt, 20, num_tokens=3).tokens == out
