"""Time and memory of the data and tokenize stages, from measured per-document rates.

Rates come from `data_rates.json` (written by `benchmarks/data_rates.py`, which records the
machine, date and corpus); the corpus size from the spec where it states it (a synthetic
source's `num_documents`). File and python_stdlib sources are only counted by reading them, which
`specc plan` does not do: then the estimate is skipped with a note, never guessed.
Formulas: docs/formulas.md section 10.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from specc.emit.configs.data import DEFAULT_PART_DOCUMENTS
from specc.runtime.data.banding import lsh_params
from specc.spec.data import MinHashSpec
from specc.spec.root import Spec

RATES_FILE = Path(__file__).with_name("data_rates.json")
ENTRY_BYTES = 52
"""A bucket-task entry at its peak (`sharded_dedup._load_bucket_entries`): 40 B of arrays by count
(uint64 key and id, np.lexsort's int64 order, the sorted copies of key and id before the unsorted
ones are freed) plus lexsort's temporaries: the measured slope was 48-53 B per entry
(benchmarks/dedup_scaling.py, 5,000 -> 20,000 documents at 1, 2 and 4 tasks, medians of 3 runs)."""
NODE_BYTES = 40
"""A clusters-task node: np.unique's sorted id and inverse index, the label and its updated copy."""
PAIR_BYTES = 16
PART_ID_BYTES = 8
BUCKET_TASK_BYTES = 2 * 2**30
"""Target peak of one bucket task's arrays: the bucket-task count is the smallest that keeps
`sharded_dedup_memory(...)["buckets"]` under it (2 GiB: a few cores' share of a CPU node)."""


@lru_cache(maxsize=1)
def calibration() -> dict:
    return json.loads(RATES_FILE.read_text())


def sharded_dedup_memory(documents: int, tasks: int, part_documents: int, minhash: MinHashSpec | None,
                         exact: bool, pairs: int) -> dict[str, int]:
    """Bytes of the arrays one task of each sharded-dedup phase holds (`specc.runtime.data.sharded_dedup`).

    bands    one part: signatures (num_perm x 4 B) and band keys with ids (bands x 16 B), twice
             while they are split by owner, per document of the part.
    buckets  (documents x (bands + exact)) / tasks entries x ENTRY_BYTES: bounded by documents per
             task, whatever the corpus size.
    clusters one task: the verified pairs (`pairs`, about one per removed duplicate) x 16 B and
             NODE_BYTES per document in a pair (two per pair at most).
    filter   one part's slice of the dropped ids: part_documents x 8 B at most.
    """
    bands = lsh_params(minhash)[0] if minhash else 0
    entries = documents * (bands + (1 if exact else 0)) / tasks
    per_part = (minhash.num_perm * 4 if minhash else 0) + 2 * (bands + 1) * PAIR_BYTES
    return {"bands": int(part_documents * per_part), "buckets": int(entries * ENTRY_BYTES),
            "clusters": int(pairs * (PAIR_BYTES + 2 * NODE_BYTES)), "filter": int(part_documents * PART_ID_BYTES)}


def bucket_tasks(spec: Spec, documents: int | None = None) -> int:
    """Bucket tasks (key ranges) of the data stage's sharded dedup: as many as the workers that run
    them (`cluster.slurm.data_array_tasks` on Slurm, `dedup.num_workers` locally), more when the
    corpus the spec states needs more to keep each task's entries under BUCKET_TASK_BYTES. A corpus
    of unknown size (file sources) gets the worker count alone: the plan says so in a note."""
    slurm = spec.cluster.executor == "slurm" and spec.cluster.slurm.data_array_tasks > 1
    floor = spec.cluster.slurm.data_array_tasks if slurm else spec.dedup.num_workers
    if documents is None:
        documents = known_documents(spec)[0]
    if documents is None or (spec.dedup.minhash is None and not spec.dedup.exact):
        return floor
    one_task = sharded_dedup_memory(documents, 1, DEFAULT_PART_DOCUMENTS, spec.dedup.minhash, spec.dedup.exact, 0)
    return max(floor, -(-one_task["buckets"] // BUCKET_TASK_BYTES))


def known_documents(spec: Spec) -> tuple[int | None, list[str]]:
    """(documents the sources yield, names of the sources whose size the spec does not state).

    A python_stdlib source with `max_files` yields at most that many (every file is a document, the
    few non-UTF-8 ones are skipped): counted as max_files, an upper bound."""
    total, unknown = 0, []
    for source in spec.corpus.sources:
        if source.type == "synthetic":
            total += source.num_documents
        elif source.type == "python_stdlib" and source.max_files is not None:
            total += source.max_files
        else:
            unknown.append(source.name)
    return (None if unknown else total), unknown


SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's default `MaxArraySize` (slurm.conf): array indices run 0..MaxArraySize-1, so an array
of more tasks is refused at submission unless the site raised it (`scontrol show config`)."""


def data_findings(spec: Spec, estimate: dict | None) -> list[dict]:
    """P230: a data-stage Slurm job array (the filter array, or the sharded dedup's bucket array)
    wider than Slurm's default MaxArraySize, which sbatch refuses unless the site raised it."""
    if estimate is None or spec.cluster.executor != "slurm" or spec.cluster.slurm.data_array_tasks <= 1:
        return []
    widths = {"cluster.slurm.data_array_tasks": spec.cluster.slurm.data_array_tasks,
              "the sharded dedup's bucket array": (estimate.get("sharded_dedup") or {}).get("bucket_tasks") or 0}
    return [{"code": "P230", "path": "cluster.slurm.data_array_tasks", "message": (
        f"{name} is {width} tasks wide, past Slurm's default MaxArraySize {SLURM_DEFAULT_MAX_ARRAY_SIZE} "
        f"(indices 0..{SLURM_DEFAULT_MAX_ARRAY_SIZE - 1}): sbatch refuses it unless the cluster's MaxArraySize "
        f"(`scontrol show config`) is larger")}
        for name, width in widths.items() if width > SLURM_DEFAULT_MAX_ARRAY_SIZE]


def data_estimate(spec: Spec) -> dict | None:
    """The data and tokenize stages' estimated seconds and memory (None without a corpus)."""
    if spec.corpus is None:
        return None
    documents, unknown = known_documents(spec)
    rates = calibration()["rates"]
    minhash, workers = spec.dedup.minhash, spec.dedup.num_workers
    bands = lsh_params(minhash)[0] if minhash else 0
    found: dict = {"documents": documents, "rates_from": calibration()["source"],
                   "rates_measured": f"{calibration()['measured']} on {calibration()['machine']}",
                   "dedup_index_bytes_per_document": rates["dedup_index_bytes_per_doc"] if minhash else 0,
                   "sharded_bucket_bytes_per_document": (bands + spec.dedup.exact) * ENTRY_BYTES}
    if documents is None:
        found["note"] = (f"corpus size unknown at plan time (source(s) {', '.join(unknown)} are counted only by "
                         f"reading them): no data or tokenizer time estimate")
        if spec.dedup.minhash is not None or spec.dedup.exact:
            found["sharded_dedup"] = {"bucket_tasks": bucket_tasks(spec), "buckets_bytes_per_task": None,
                                      "note": "bucket tasks = worker count: per-task memory unbounded by the plan"}
        return found
    per_document = 1 / rates["filter_docs_per_s"] + (1 / rates["sign_docs_per_s"] if minhash else 0)
    filter_seconds = documents * per_document / workers
    dedup_seconds = documents / rates["dedup_docs_per_s"] if minhash else 0.0
    train = min(spec.tokenizer.sample_documents, documents) / rates["tokenizer_train_docs_per_s"]
    encode = documents / rates["tokenize_encode_docs_per_s"]
    found.update({
        "filter_seconds": round(filter_seconds, 3), "dedup_seconds": round(dedup_seconds, 3),
        "data_seconds": round(filter_seconds + dedup_seconds, 3),
        "dedup_index_bytes": int(documents * found["dedup_index_bytes_per_document"]),
        "tokenizer_train_seconds": round(train, 3), "tokenizer_encode_seconds": round(encode, 3),
        "tokenizer_seconds": round(train + encode, 3),
        "note": (f"rates per document of {calibration()['chars_per_document']:,} chars with the heuristic filters: "
                 f"longer documents, classifier and perplexity filters take longer")})
    if minhash is not None or spec.dedup.exact:
        tasks = bucket_tasks(spec, documents)
        memory = sharded_dedup_memory(documents, tasks, DEFAULT_PART_DOCUMENTS, minhash, spec.dedup.exact, pairs=0)
        found["sharded_dedup"] = {"bucket_tasks": tasks, "bucket_task_target_bytes": BUCKET_TASK_BYTES,
                                  "bands_bytes_per_task": memory["bands"],
                                  "buckets_bytes_per_task": memory["buckets"], "filter_bytes_per_task": memory["filter"],
                                  "clusters_bytes_per_pair": PAIR_BYTES + 2 * NODE_BYTES}
    return found
