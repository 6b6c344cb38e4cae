"""Speculative decoding: greedy output identical to the target's, sampled output distributed
as the target's (chi-square goodness of fit against exact probabilities)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from align_helpers import tiny_model_spec
from align_helpers import one_cpu_thread  # noqa: F401 (fixtures)
from specc.runtime.infer.decode import SamplingSettings, generate
from specc.runtime.infer.speculative import accept_or_resample, speculative_generate
from specc.runtime.train.model import build_model


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square(df) by the Wilson-Hilferty approximation (no scipy)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: dict, probs: dict, total: int) -> tuple[float, int]:
    """Statistic and degrees of freedom, pooling cells expected fewer than 5 times."""
    statistic, cells, pooled_observed, pooled_expected = 0.0, 0, 0, 0.0
    for key, p in probs.items():
        expected = p * total
        if expected < 5:
            pooled_observed += counts.get(key, 0)
            pooled_expected += expected
            continue
        statistic += (counts.get(key, 0) - expected) ** 2 / expected
        cells += 1
    if pooled_expected > 0:
        statistic += (pooled_observed - pooled_expected) ** 2 / max(pooled_expected, 1e-9)
        cells += 1
    return statistic, cells - 1


def peaked_pair(vocab: int):
    """Target and draft with sharp, different next-token distributions (so the test has power)."""
    target = build_model(tiny_model_spec(vocab_size=vocab, max_seq_len=32, tie_embeddings=False), seed=11).eval()
    draft = build_model(tiny_model_spec(vocab_size=vocab, max_seq_len=32, num_layers=1, tie_embeddings=False),
                        seed=12).eval()
    with torch.no_grad():
        target.output.weight.mul_(60.0)
        draft.output.weight.mul_(60.0)
    return target, draft


def test_greedy_speculative_equals_plain_greedy():
    target = build_model(tiny_model_spec(), seed=5).eval()
    for draft_seed, num_tokens in [(6, 4), (5, 3), (7, 1)]:  # seed 5: the draft is the target (all accepted)
        draft = build_model(tiny_model_spec(num_layers=1) if draft_seed != 5 else tiny_model_spec(),
                            seed=draft_seed).eval()
        for prompt in ([3, 14, 15, 92], [65, 35]):
            plain = generate(target, prompt, 40).tokens
            result = speculative_generate(target, draft, prompt, 40, num_tokens)
            assert result.tokens == plain
            assert result.target_calls <= len(plain)
            if draft_seed == 5:
                assert result.acceptance_rate == 1.0
                assert result.target_calls == math.ceil(40 / (num_tokens + 1))


def test_rejection_rule_reproduces_target_distribution():
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.1, 0.1, 0.0])
    q = torch.tensor([0.1, 0.1, 0.2, 0.2, 0.4])
    draws = 20000
    counts: dict = {}
    for _ in range(draws):
        proposal = int(torch.multinomial(q, 1, generator=generator))
        _, token = accept_or_resample(p, q, proposal, generator)
        counts[token] = counts.get(token, 0) + 1
    assert counts.get(4, 0) == 0  # p gives it no mass, though q proposes it 40% of the time
    statistic, df = chi_square(counts, {i: float(p[i]) for i in range(4)}, draws)
    assert statistic < chi_square_critical(df)
    wrong, _ = chi_square(counts, {i: float(q[i]) for i in range(5)}, draws)
    assert wrong > chi_square_critical(df) * 10  # the same check rejects the draft's distribution


@pytest.mark.slow  # ~10 s
def test_sampled_speculative_matches_target_joint_distribution():
    vocab, prompt, draws = 6, [1, 2, 3], 1500
    target, draft = peaked_pair(vocab)
    settings = SamplingSettings(temperature=1.0)
    exact, draft_exact = {}, {}
    with torch.no_grad():
        for model, table in ((target, exact), (draft, draft_exact)):
            first = model(torch.tensor([prompt]))[0, -1].softmax(-1)
            for a in range(vocab):
                second = model(torch.tensor([prompt + [a]]))[0, -1].softmax(-1)
                for b in range(vocab):
                    table[(a, b)] = float(first[a] * second[b])
    distance = 0.5 * sum(abs(exact[k] - draft_exact[k]) for k in exact)
    assert distance > 0.3, "the draft must differ from the target for this test to mean anything"
    generator = torch.Generator().manual_seed(1)
    counts: dict = {}
    accepted = proposed = 0
    for _ in range(draws):
        result = speculative_generate(target, draft, prompt, 2, num_tokens=2, settings=settings, generator=generator)
        key = tuple(result.tokens)
        counts[key] = counts.get(key, 0) + 1
        accepted, proposed = accepted + result.accepted, proposed + result.proposed
    statistic, df = chi_square(counts, exact, draws)
    assert statistic < chi_square_critical(df), (statistic, df)
    assert 0 < accepted < proposed
    assert set(counts) <= set(itertools.product(range(vocab), repeat=2))
