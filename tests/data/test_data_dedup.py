"""Dedup scored against planted duplicates, and its determinism."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import synthetic_documents

from specc.runtime.data.dedup import (
    Signer, candidate_probability, deduplicate, lsh_params, normalized_hash, verify_threshold,
)
from specc.runtime.data.scoring import score_dedup
from specc.spec.data import MinHashSpec

CORPUS = synthetic_documents(num_documents=1500, seed=5, duplicate_fraction=0.3, junk_fraction=0.0)


def run_dedup(documents, spec: MinHashSpec, exact: bool = True):
    signatures = Signer(spec).signatures(d.text for d in documents)
    hashes = np.array([normalized_hash(d.text) for d in documents], dtype=np.uint64)
    parts = [signatures[:500], signatures[500:]]  # as the stage streams them, part by part
    result = deduplicate(hashes, parts, exact, spec)
    removed = {documents[i].id: {"id": documents[i].id, "kind": kind, "duplicate_of": {"id": documents[j].id}}
               for i, (j, kind) in result.duplicate_of.items()}
    return result, removed


@pytest.mark.parametrize("threshold", [0.7, 0.8, 0.9])
def test_planted_duplicates_found_at_the_threshold(threshold):
    spec = MinHashSpec(threshold=threshold)
    result, removed = run_dedup(CORPUS, spec)
    score = score_dedup(CORPUS, {d.id for d in CORPUS}, removed, spec.ngram, threshold)
    assert score["exact_recall"] == 1.0
    assert score["near_above_planted"] >= 15  # enough planted pairs to measure recall
    assert score["near_recall_above_threshold"] >= 0.95
    assert score["precision"] >= 0.99
    assert result.exact_removed == score["exact_planted"]


def test_exact_dedup_normalises_case_and_whitespace():
    assert normalized_hash("Hello   World\n") == normalized_hash("hello world")
    assert normalized_hash("hello world") != normalized_hash("hello worlds")


def test_keeps_the_first_document_of_each_cluster():
    spec = MinHashSpec(threshold=0.8)
    result, _ = run_dedup(CORPUS, spec)
    for removed, (kept, _) in result.duplicate_of.items():
        assert kept < removed and result.keep[kept]


def test_spec_bands_and_rows_are_used():
    assert lsh_params(MinHashSpec(num_perm=128, bands=16, rows=8)) == (16, 8)
    bands, rows = lsh_params(MinHashSpec(num_perm=128, threshold=0.8))
    assert bands * rows <= 128 and candidate_probability(0.8, bands, rows) >= 0.97
    assert candidate_probability(0.8, bands + 1, 128 // (bands + 1)) >= candidate_probability(0.8, bands, rows) or \
        128 // (bands + 1) < rows
    assert 0.7 < verify_threshold(MinHashSpec(num_perm=128, threshold=0.8)) < 0.8


def test_unrelated_documents_are_not_merged():
    clean = [d for d in CORPUS if d.meta["kind"] == "clean"]
    result, _ = run_dedup(clean, MinHashSpec(threshold=0.5))
    assert result.near_removed == 0 and result.exact_removed == 0
