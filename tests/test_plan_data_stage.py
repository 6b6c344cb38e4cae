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


def test_bucket_tasks_keep_each_task_under_the_target_and_reach_the_bundle():
    """The count the plan states is the one the data config carries (the runtime and the Slurm
    bucket array use it): the worker count, more when the corpus needs more tasks."""
    from specc.emit.configs.data import build_data_config
    from specc.plan.data_stage import BUCKET_TASK_BYTES, bucket_tasks

    small = spec_with({"type": "synthetic", "name": "prose", "num_documents": 3000})
    assert bucket_tasks(small) == small.dedup.num_workers
    large = spec_with({"type": "synthetic", "name": "prose", "num_documents": 10**8})
    tasks = bucket_tasks(large)
    estimate = data_estimate(large)["sharded_dedup"]
    assert estimate["bucket_tasks"] == tasks == build_data_config(large, SPECS)["bucket_tasks"] > 1
    assert estimate["buckets_bytes_per_task"] <= BUCKET_TASK_BYTES
    fewer = sharded_dedup_memory(10**8, tasks - 1, 2000, large.dedup.minhash, large.dedup.exact, pairs=0)
    assert fewer["buckets"] > BUCKET_TASK_BYTES  # the smallest count under the target
    arrayed = large.model_copy(update={"cluster": large.cluster.model_copy(update={
        "executor": "slurm", "slurm": large.cluster.slurm.model_copy(update={"data_array_tasks": 4 * tasks})})})
    assert bucket_tasks(arrayed) == 4 * tasks  # one bucket task per array task at least
    unknown = spec_with({"type": "files", "name": "web", "path": "data/*.jsonl"})
    assert data_estimate(unknown)["sharded_dedup"]["bucket_tasks"] == unknown.dedup.num_workers
