"""Scaling-law check against Hoffmann et al. 2022 and Besiroglu et al. 2024."""

from __future__ import annotations

import pytest

from specc.plan.scaling import BESIROGLU, HOFFMANN, scaling_check


def test_loss_formula():
    assert HOFFMANN.loss(70e9, 1.4e12) == pytest.approx(1.6934 + 406.4 / 70e9**0.3392 + 410.7 / 1.4e12**0.2849)


def test_chinchilla_optimum_is_about_20_tokens_per_parameter():
    """Chinchilla (70B, 1.4T tokens, C = 5.88e23) is near-optimal under the replication fit."""
    compute = 6 * 70e9 * 1.4e12
    ratio = BESIROGLU.optimal_tokens(compute) / BESIROGLU.optimal_params(compute)
    assert 15 < ratio < 30
    assert BESIROGLU.optimal_params(compute) * BESIROGLU.optimal_tokens(compute) * 6 == pytest.approx(compute)


def test_optimum_minimises_loss_at_fixed_compute():
    compute = 1e23
    n_star = BESIROGLU.optimal_params(compute)
    best = BESIROGLU.loss(n_star, compute / 6 / n_star)
    for factor in (0.5, 2.0):
        n = n_star * factor
        assert BESIROGLU.loss(n, compute / 6 / n) > best


def test_far_from_optimal_warns():
    assert scaling_check(7e9, 140e9).warning() is None
    assert "tokens per parameter" in scaling_check(7e9, 15e12).warning()
    assert "under-trained" in scaling_check(70e9, 10e9).warning()
