"""The plan's data and tokenize stage estimates: from the calibration file's per-document rates and
the corpus size the spec states, skipped with a note when the spec does not state it."""

from __future__ import annotations

from conftest import SPECS

from specc.diagnostics.check import check_file
from specc.plan.data_stage import calibration, data_estimate, sharded_dedup_memory
from specc.spec.data import CorpusSpec, MinHashSpec
from specc.spec.root import Spec

TINY = check_file(SPECS / "tiny.yaml").spec


def spec_with(source: dict) -> Spec:
    return TINY.model_copy(update={"corpus": CorpusSpec.model_validate({"sources": [source]})})


def test_synthetic_corpus_is_estimated_from_the_calibrated_rates():
    spec = spec_with({"type": "synthetic", "name": "prose", "num_documents": 3000})
    estimate = data_estimate(spec)
    rates = calibration()["rates"]
    assert estimate["documents"] == 3000
    expected = 3000 * (1 / rates["filter_docs_per_s"] + 1 / rates["sign_docs_per_s"]) / spec.dedup.num_workers
    assert abs(estimate["filter_seconds"] - expected) < 1e-2
    assert abs(estimate["dedup_seconds"] - 3000 / rates["dedup_docs_per_s"]) < 1e-2
    assert estimate["dedup_index_bytes"] == int(3000 * rates["dedup_index_bytes_per_doc"])
    assert "data_rates.py" in estimate["rates_from"]


def test_file_sources_are_not_counted_at_plan_time():
    spec = spec_with({"type": "files", "name": "web", "path": "data/*.jsonl"})
    estimate = data_estimate(spec)
    assert estimate["documents"] is None and "data_seconds" not in estimate
    assert "corpus size unknown at plan time" in estimate["note"] and "web" in estimate["note"]


def test_bucket_memory_per_task_is_flat_at_a_fixed_documents_per_task():
    minhash = MinHashSpec(threshold=0.8)
    one = sharded_dedup_memory(10**6, 1, 2000, minhash, True, pairs=0)
    four = sharded_dedup_memory(4 * 10**6, 4, 2000, minhash, True, pairs=0)
    assert one["buckets"] == four["buckets"] and one["bands"] == four["bands"]
    assert sharded_dedup_memory(4 * 10**6, 1, 2000, minhash, True, pairs=0)["buckets"] == 4 * one["buckets"]
