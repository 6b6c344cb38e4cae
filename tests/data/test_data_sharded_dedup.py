"""Sharded dedup (phases as array tasks): the same kept set for any task count, the single-process
dedup's recall and precision on planted duplicates, connected components, exact-only runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import synthetic_documents

from specc.runtime.data import sharded_dedup as sd
from specc.runtime.data.dedup import Signer, deduplicate, normalized_hash
from specc.runtime.data.documents import read_documents, write_documents
from specc.runtime.data.scoring import score_dedup
from specc.spec.data import MinHashSpec

CORPUS = synthetic_documents(num_documents=1500, seed=5, duplicate_fraction=0.3, junk_fraction=0.0)
PART = 250


def write_parts(directory: Path, documents: list) -> list[dict]:
    parts = []
    for index in range(0, len(documents), PART):
        path = directory / f"{index // PART:05d}.jsonl.gz"
        write_documents(path, documents[index:index + PART])
        parts.append({"documents": str(path)})
    return parts


def run_sharded(directory: Path, documents: list, tasks: int, spec: MinHashSpec | None, exact: bool = True):
    parts = write_parts(directory / "in", documents)
    job = sd.prepare(directory / f"job-{tasks}", parts, tasks, exact, spec)
    sd.run_local(job.workdir)
    kept = {d.id for path in sorted((job.workdir / "kept").glob("*.jsonl.gz")) for d in read_documents(path)}
    counts = [min(PART, len(documents) - start) for start in range(0, len(documents), PART)]
    return kept, sd.result(job, counts)


def removed_records(documents: list, result) -> dict:
    return {documents[i].id: {"id": documents[i].id, "kind": kind, "duplicate_of": {"id": documents[j].id}}
            for i, (j, kind) in result.duplicate_of.items()}


def single_process(documents: list, spec: MinHashSpec, exact: bool = True):
    signatures = Signer(spec).signatures(d.text for d in documents)
    hashes = np.array([normalized_hash(d.text) for d in documents], dtype=np.uint64)
    return deduplicate(hashes, [signatures], exact, spec)


def test_kept_sets_are_identical_for_1_2_and_4_tasks(tmp_path):
    spec = MinHashSpec(threshold=0.8)
    kept = {tasks: run_sharded(tmp_path, CORPUS, tasks, spec)[0] for tasks in (1, 2, 4)}
    assert kept[1] == kept[2] == kept[4]
    assert 0 < len(kept[1]) < len(CORPUS)


@pytest.mark.parametrize("threshold", [0.7, 0.8, 0.9])
def test_recall_and_precision_equal_the_single_process_dedup(tmp_path, threshold):
    spec = MinHashSpec(threshold=threshold)
    ids = {d.id for d in CORPUS}
    kept, sharded = run_sharded(tmp_path, CORPUS, 2, spec)
    single = single_process(CORPUS, spec)
    ours = score_dedup(CORPUS, ids, removed_records(CORPUS, sharded), spec.ngram, threshold)
    theirs = score_dedup(CORPUS, ids, removed_records(CORPUS, single), spec.ngram, threshold)
    for key in ("exact_recall", "exact_planted", "near_recall_above_threshold", "near_above_planted", "precision"):
        assert ours[key] == theirs[key], key
    assert ours["precision"] == 1.0 and ours["near_recall_above_threshold"] >= 0.95
    assert sharded.exact_removed == single.exact_removed
    # chains (A~B~C, A!~C) are one component here: the only extra removals are more copies of the same original
    extra = {CORPUS[i].id for i in np.flatnonzero(single.keep & ~sharded.keep)}
    assert not np.flatnonzero(~single.keep & sharded.keep).size
    assert all(CORPUS[sharded.duplicate_of[i][0]].id == CORPUS[i].meta["original"]
               for i in np.flatnonzero(single.keep & ~sharded.keep))
    assert kept == ids - {CORPUS[i].id for i in sharded.duplicate_of} and len(extra) <= 2


def test_exact_only(tmp_path):
    kept, result = run_sharded(tmp_path, CORPUS, 2, None, exact=True)
    single = single_process(CORPUS, MinHashSpec(), exact=True)
    assert result.exact_removed == single.exact_removed and result.near_removed == 0
    planted = {d.id for d in CORPUS if d.meta["kind"] == "exact_dup"}
    assert not kept & planted


def test_components_keep_the_earliest_document_of_a_chain():
    pairs = np.array([[7, 3], [3, 1], [12, 10], [11, 10], [20, 12]], dtype=np.uint64)
    nodes, representative = sd.components(pairs)
    assert dict(zip(nodes.tolist(), representative.tolist())) == {
        1: 1, 3: 1, 7: 1, 10: 10, 11: 10, 12: 10, 20: 10}


def test_every_key_has_one_owner_and_owners_split_the_range_evenly():
    keys = sd._splitmix(np.arange(100_000, dtype=np.uint64))
    for tasks in (1, 3, 4):
        owners = sd.bucket_task(keys, tasks)
        assert owners.max() == tasks - 1
        counts = np.bincount(owners.astype(np.int64), minlength=tasks)
        assert counts.min() > 0.95 * len(keys) / tasks


def test_band_keys_differ_between_bands_with_equal_values():
    signatures = np.ones((1, 8), dtype=np.uint32)
    keys = sd.band_keys(signatures, 2, 4)
    assert keys[0, 0] != keys[0, 1]


def test_a_task_outside_the_array_is_refused(tmp_path):
    sd.prepare(tmp_path, write_parts(tmp_path / "in", CORPUS[:10]), 2, True, None)
    with pytest.raises(SystemExit, match="task 2 is outside 0..1 of buckets"):
        sd.main(["buckets", str(tmp_path), "--task", "2"])
    with pytest.raises(SystemExit, match="outside 0..0 of clusters"):
        sd.main(["clusters", str(tmp_path), "--task", "1"])
