"""Mixture sampling: targets reached with seeded epochs and subsamples, proportions reported."""

from __future__ import annotations

import numpy as np
import pytest

from specc.runtime.data.documents import DataError
from specc.runtime.data.mixture import BYTES_PER_TOKEN, sample

SIZES = {"web": np.full(1000, 400, dtype=np.int64), "code": np.full(50, 800, dtype=np.int64)}


def test_target_documents_with_epochs_for_a_small_source():
    counts, report = sample(SIZES, {"web": 0.5, "code": 0.5}, None, 400, seed=3)
    assert counts["web"].sum() == 200 and counts["web"].max() == 1  # subsampled
    assert counts["code"].sum() == 200 and set(counts["code"].tolist()) == {4}  # four whole epochs
    assert report["sources"]["code"]["epochs"] == 4.0


def test_target_tokens_reaches_requested_proportions():
    weights = {"web": 0.7, "code": 0.3}
    counts, report = sample(SIZES, weights, 60_000, None, seed=1)
    tokens = {name: (SIZES[name] / BYTES_PER_TOKEN * counts[name]).sum() for name in SIZES}
    assert tokens["web"] == pytest.approx(42_000, rel=0.01)
    assert tokens["code"] == pytest.approx(18_000, rel=0.02)
    for name, weight in weights.items():
        assert report["sources"][name]["achieved_proportion"] == pytest.approx(weight, abs=0.01)


def test_seeded_and_without_target_keeps_all():
    first, _ = sample(SIZES, {"web": 0.5, "code": 0.5}, None, 300, seed=9)
    again, _ = sample(SIZES, {"web": 0.5, "code": 0.5}, None, 300, seed=9)
    other, _ = sample(SIZES, {"web": 0.5, "code": 0.5}, None, 300, seed=10)
    assert all(np.array_equal(first[k], again[k]) for k in SIZES)
    assert not np.array_equal(first["web"], other["web"])
    counts, report = sample(SIZES, {"web": 0.5, "code": 0.5}, None, None, seed=0)
    assert all((c == 1).all() for c in counts.values())
    assert report["sources"]["web"]["achieved_proportion"] == pytest.approx(400_000 / 440_000, abs=1e-3)
    with pytest.raises(DataError, match="not both"):
        sample(SIZES, {"web": 0.5, "code": 0.5}, 10, 10, seed=0)
