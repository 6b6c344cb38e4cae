"""The `data` stage: sources -> filters -> exact and MinHash dedup -> mixture -> kept documents.

Layout under `<run_dir>/data/`:
    config.json                  the config this directory was produced with
    parts/<source>/<NNNNN>.*     per part of `part_documents` input documents: the documents
                                 the filters kept (.jsonl.gz), their MinHash signatures
                                 (.sig.npy), ids/hashes/sizes (.npz), and last a .json marker
                                 with the part's filter statistics
    models/                      models trained from the spec (classifier filters)
    dedup/sharded/               the sharded dedup's work directory (`specc.runtime.data.sharded_dedup`):
                                 band and exact keys per bucket task, pairs, the dropped documents
    dedup/removed.jsonl.gz       every duplicate removed, with the document it duplicates
    output/<source>-<NNNNN>.jsonl.gz   the mixed output (`{source, id, text, meta}` lines)
    manifest.json                output files in order (read by the tokenize stage)
    stats.json, summary.txt      report: per filter documents/bytes in and out with drop
                                 reasons and examples, dedup counts and clusters, mixture
                                 requested vs achieved, throughput
Dedup runs as the sharded phases (bands per part, buckets per key range, clusters, then the
output phase drops what they found): locally a loop over task ids, in a pool of `dedup.num_workers`
from POOL_MIN_DOCUMENTS documents;
under `cluster.slurm.data_array_tasks` the array tasks also write their parts' bands, a second
array (`SPECC_DATA_PHASE=buckets`, one task per bucket task) finds the pairs, and the stage's own
job clusters, filters and mixes. `bucket_tasks` comes from the plan (`specc.plan.data_stage.bucket_tasks`).
Resumption: parts with a marker and output files that exist are skipped, so are scattered parts
and finished bucket tasks; a different config in the same directory starts over.
"""

from __future__ import annotations

import gzip
import itertools
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter, ValidationError

from specc.emit.configs.data import DEFAULT_PART_DOCUMENTS
from specc.integrity import StageError, storage_errors
from specc.runtime.data import mixture
from specc.runtime.data import sharded_dedup
from specc.runtime.data.banding import lsh_params
from specc.runtime.data.dedup import Signer, normalized_hash
from specc.runtime.data.documents import DataError, Document, read_documents, write_documents
from specc.runtime.data.filters import build_filters
from specc.runtime.data.totals import source_totals
from specc.runtime.data.progress import Progress, log
from specc.runtime.data.report import count_language, dedup_by_source, merge_part_stats, summary_text
from specc.runtime.data.sources import iter_source
from specc.runtime.io import MetricsWriter, atomic_write_json, atomic_write_text, config_hash, mark_success
from specc.runtime.stages import skips_when_complete
from specc.spec.data import CorpusSpec, DedupSpec, Filter

EXAMPLES_PER_REASON = 3
SNIPPET_CHARS = 160


def parse_stage_config(params: dict) -> dict:
    """Re-validate the spec sections of the params with the spec models."""
    try:
        return {
            "corpus": CorpusSpec.model_validate(params["corpus"]),
            "filters": TypeAdapter(list[Filter]).validate_python(params.get("filters", [])),
            "dedup": DedupSpec.model_validate(params.get("dedup", {})),
            "spec_dir": Path(params.get("spec_dir", ".")),
            "part_documents": int(params.get("part_documents", DEFAULT_PART_DOCUMENTS)),
            "array_tasks": int(params.get("array_tasks", 1)),
            "bucket_tasks": int(params.get("bucket_tasks", 1)),
        }
    except KeyError as error:
        raise DataError(f"config params lack {error.args[0]!r}") from None
    except ValidationError as error:
        raise DataError(f"config params are not a valid spec section:\n{error}") from None


def prepare_stage_dir(stage_dir: Path, config: dict) -> None:
    """Keep completed parts only if they were produced by this same config."""
    recorded = stage_dir / "config.json"
    if recorded.exists():
        try:
            same = config_hash(json.loads(recorded.read_text())) == config_hash(config)
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            log("data", f"{stage_dir} holds results of another config: starting over")
            shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if not recorded.exists():
        atomic_write_json(recorded, config)


# --- phase 1: filter and sign, one part at a time ---------------------------------------

_WORKER: dict = {}


def _init_worker(filters: list, minhash_spec, stage_dir: Path, parent_pid: int | None = None) -> None:
    _WORKER.update(filters=filters, signer=Signer(minhash_spec) if minhash_spec else None, stage_dir=stage_dir)
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """Pool workers hold both ends of their task pipe, so a killed stage would leave them
    waiting forever: exit as soon as the parent is gone."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def part_path(stage_dir: Path, source: str, index: int, suffix: str) -> Path:
    return stage_dir / "parts" / source / f"{index:05d}{suffix}"


def _new_filter_stats() -> dict:
    return {"documents_in": 0, "bytes_in": 0, "dropped": 0, "bytes_dropped": 0, "reasons": {}, "examples": {}}


def process_part(source: str, index: int, documents: list[Document]) -> dict:
    """Filter one part, sign and hash the kept documents, write them; the marker goes last."""
    started = time.perf_counter()
    filters, signer, stage_dir = _WORKER["filters"], _WORKER["signer"], _WORKER["stage_dir"]
    stats = {"source": source, "part": index, "documents_in": len(documents), "bytes_in": 0,
             "filters": {built.name: _new_filter_stats() for built in filters}, "languages": {}}
    kept: list[Document] = []
    for document in documents:
        size = len(document.text.encode())
        stats["bytes_in"] += size
        reason = _drop(filters, document, size, stats["filters"])
        count_language(stats["languages"], document, reason)
        if reason is None:
            kept.append(document)
    sizes = np.array([len(d.text.encode()) for d in kept], dtype=np.int64)
    hashes = np.array([normalized_hash(d.text) for d in kept], dtype=np.uint64)
    write_documents(part_path(stage_dir, source, index, ".jsonl.gz"), kept)
    if signer is not None:
        signatures = signer.signatures(d.text for d in kept)
        temporary = part_path(stage_dir, source, index, f".sig.{os.getpid()}.tmp.npy")
        np.save(temporary, signatures)
        temporary.replace(part_path(stage_dir, source, index, ".sig.npy"))
    temporary = part_path(stage_dir, source, index, f".{os.getpid()}.tmp.npz")
    np.savez(temporary, ids=np.array([d.id for d in kept], dtype=str), hash=hashes, nbytes=sizes)
    temporary.replace(part_path(stage_dir, source, index, ".npz"))
    stats.update(documents_out=len(kept), bytes_out=int(sizes.sum()), seconds=time.perf_counter() - started)
    atomic_write_json(part_path(stage_dir, source, index, ".json"), stats)
    return stats


def _drop(filters: list, document: Document, size: int, stats: dict) -> str | None:
    for built in filters:
        if not built.applies_to(document):
            continue
        record = stats[built.name]
        record["documents_in"] += 1
        record["bytes_in"] += size
        reason = built.check(document)
        if reason is None:
            continue
        record["dropped"] += 1
        record["bytes_dropped"] += size
        record["reasons"][reason] = record["reasons"].get(reason, 0) + 1
        examples = record["examples"].setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append({"id": document.id, "text": document.text[:SNIPPET_CHARS]})
        return reason
    return None


def iter_parts(settings: dict) -> Iterator[tuple[str, int, list[Document]]]:
    """(source, part index, documents) in corpus order; sources are read lazily, part by part."""
    for source in settings["corpus"].sources:
        documents = iter_source(source, settings["spec_dir"])
        for index in itertools.count():
            batch = list(itertools.islice(documents, settings["part_documents"]))
            if not batch:
                break
            yield source.name, index, batch


def array_shard(settings: dict) -> tuple[int, int] | None:
    """(task, tasks) when this process is one task of the stage's Slurm job array, else None.

    Array tasks run phase 1 only, each on every `tasks`-th part; the job that follows (not an
    array task) finds those parts done and runs the dedup, mixture and output phases."""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if settings["array_tasks"] <= 1 or task is None:
        return None
    return int(task), settings["array_tasks"]


def filter_parts(settings: dict, stage_dir: Path, filters: list, metrics: MetricsWriter,
                 shard: tuple[int, int] | None = None) -> list[tuple[str, int]]:
    """Phase 1 over all parts (or over this array task's share); returns the part keys in corpus order."""
    keys: list[tuple[str, int]] = []
    workers = settings["dedup"].num_workers
    initargs = (filters, settings["dedup"].minhash, stage_dir)
    progress = Progress("data", f"filtering and signing with {workers} worker(s)")
    done = skipped = 0
    # totals first, so that `specc launch` can show progress against them (specc.launch.progress)
    metrics.write(event="plan", phase="filter", sources=source_totals(settings["corpus"].sources, settings["spec_dir"]))

    def finished(stats: dict) -> None:
        nonlocal done
        done += 1
        metrics.write(event="part", **{k: stats[k] for k in ("source", "part", "documents_in", "documents_out",
                                                              "bytes_in", "bytes_out", "seconds")})
        progress.advance(f"part {stats['source']}/{stats['part']}: {stats['documents_in']} in, "
                         f"{stats['documents_out']} kept ({stats['documents_in'] / max(stats['seconds'], 1e-9):,.0f} docs/s)")

    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, initargs + (os.getpid(),))
    if pool is None:
        _init_worker(*initargs)
    pending: deque = deque()
    try:
        for ordinal, (source, index, documents) in enumerate(iter_parts(settings)):
            keys.append((source, index))
            if shard is not None and ordinal % shard[1] != shard[0]:
                continue  # another array task's part
            if part_path(stage_dir, source, index, ".json").exists():
                skipped += 1
                continue
            if pool is None:
                finished(process_part(source, index, documents))
                continue
            pending.append(pool.apply_async(process_part, (source, index, documents)))
            while len(pending) >= 2 * workers:  # bounded read-ahead: memory stays at a few parts
                finished(pending.popleft().get())
        while pending:
            finished(pending.popleft().get())
    finally:
        if pool is not None:
            pool.terminate()
    seconds = progress.close()
    if skipped:
        log("data", f"resumed: skipped {skipped} completed part(s)")
    metrics.write(event="filter_phase", parts=len(keys), parts_done=done, parts_skipped=skipped, seconds=seconds)
    return keys


# --- phases 2-4: dedup, mixture, output --------------------------------------------------

def load_part_arrays(stage_dir: Path, keys: list[tuple[str, int]]) -> list[dict]:
    arrays = []
    for source, index in keys:
        with np.load(part_path(stage_dir, source, index, ".npz")) as archive:
            arrays.append({name: archive[name] for name in ("ids", "hash", "nbytes")})
    return arrays


POOL_MIN_DOCUMENTS = 500_000
"""The dedup phases use a process pool from this corpus size: a spawned pool costs ~2.5 s to start
on the CI machine, the bands of a million documents ~2.5 s in one process (2,000-document parts
from their signatures: 5 ms each)."""
DEDUP_PHASE = "SPECC_DATA_PHASE"
"""Set to `buckets` in the environment of the bucket job array the launcher submits."""


def dedup_job(settings: dict, stage_dir: Path, keys: list[tuple[str, int]]) -> sharded_dedup.Job:
    """The sharded dedup's manifest over the filtered parts in corpus order (the same from every
    array task: each writes it, atomically, before scattering its own parts)."""
    parts = [{"documents": str(part_path(stage_dir, s, i, ".jsonl.gz")), "hashes": str(part_path(stage_dir, s, i, ".npz")),
              "signatures": str(part_path(stage_dir, s, i, ".sig.npy")) if settings["dedup"].minhash else None}
             for s, i in keys]
    return sharded_dedup.prepare(stage_dir / "dedup" / "sharded", parts, settings["bucket_tasks"],
                                 settings["dedup"].exact, settings["dedup"].minhash)


def band_parts(job: sharded_dedup.Job, parts: list[int], workers: int) -> None:
    """Phase A for the parts not yet scattered (signatures come from the filter phase)."""
    todo = [p for p in parts if not sharded_dedup.bands_marker(job, p).exists()]
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            pool.starmap(_band_one, [(str(job.workdir), part) for part in todo])
        return
    signer = Signer(job.minhash) if job.minhash else None
    for part in todo:
        sharded_dedup.band_part(job, part, signer)


def _band_one(workdir: str, part: int) -> None:
    job = sharded_dedup.Job.load(Path(workdir))
    sharded_dedup.band_part(job, part, Signer(job.minhash) if job.minhash else None)


def run_dedup(settings: dict, stage_dir: Path, keys: list[tuple[str, int]], arrays: list[dict],
              metrics: MetricsWriter):
    """Bands of the parts no array task scattered, the bucket tasks no bucket array ran, clusters:
    the kept flags in corpus order (the output phase is the sharded dedup's filter)."""
    spec, documents = settings["dedup"], sum(len(a["ids"]) for a in arrays)
    if spec.minhash is None and not spec.exact:
        return sharded_dedup.DedupResult(np.ones(documents, dtype=bool))
    workers = spec.num_workers if documents >= POOL_MIN_DOCUMENTS else 1
    job = dedup_job(settings, stage_dir, keys)
    band_parts(job, list(range(len(keys))), workers)
    buckets = [t for t in range(job.tasks) if not sharded_dedup.pairs_path(job, t).exists()]
    sharded_dedup.run_tasks(job, "buckets", buckets, workers)
    sharded_dedup.run_clusters(job)
    metrics.write(event="dedup_phase", bucket_tasks=job.tasks, bucket_tasks_done=len(buckets),
                  bucket_tasks_skipped=job.tasks - len(buckets))
    result = sharded_dedup.result(job, [len(a["ids"]) for a in arrays])
    if spec.minhash is not None:
        bands, rows = lsh_params(spec.minhash)
        result.lsh = {"bands": bands, "rows": rows, "bucket_tasks": job.tasks}
    return result


def run_bucket_task(settings: dict, stage_dir: Path, task: int) -> None:
    """One task of the bucket job array: the pairs of one key range (phase B)."""
    job = sharded_dedup.Job.load(stage_dir / "dedup" / "sharded")
    started = time.perf_counter()
    sharded_dedup.run_buckets(job, task)
    with MetricsWriter(stage_dir / f"metrics.bucket-task-{task}.jsonl") as metrics:
        metrics.write(event="buckets", task=task, tasks=job.tasks, seconds=round(time.perf_counter() - started, 3))
    log("data", f"bucket task {task + 1}/{job.tasks}: pairs written")


def write_removed(stage_dir: Path, result, ids: list[str], sources: list[str]) -> None:
    """Every removed duplicate with the document kept in its place (for audits and scoring)."""
    path = stage_dir / "dedup" / "removed.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(".removed.jsonl.gz.tmp")
    with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as stream:
        for index, (original, kind) in sorted(result.duplicate_of.items()):
            record = {"source": sources[index], "id": ids[index], "kind": kind,
                      "duplicate_of": {"source": sources[original], "id": ids[original]}}
            stream.write((json.dumps(record, sort_keys=True) + "\n").encode())
    temporary.replace(path)


def write_output(stage_dir: Path, keys: list[tuple[str, int]], repeat: np.ndarray, offsets: list[int],
                 arrays: list[dict]) -> list[dict]:
    """Output part per input part: each kept document written `repeat` times (skip finished ones)."""
    files = []
    for (source, index), start, array in zip(keys, offsets, arrays):
        counts = repeat[start:start + len(array["ids"])]
        name = f"output/{source}-{index:05d}.jsonl.gz"
        path = stage_dir / name
        if not path.exists():
            documents = read_documents(part_path(stage_dir, source, index, ".jsonl.gz"))
            write_documents(path, (d for d, count in zip(documents, counts) for _ in range(int(count))))
        files.append({"file": name, "source": source, "documents": int(counts.sum()),
                      "bytes": int((array["nbytes"] * counts).sum())})
    return files


def mix(settings: dict, keys: list[tuple[str, int]], arrays: list[dict], keep: np.ndarray):
    """Repeat count of every document in corpus order (0 when filtered out by dedup)."""
    corpus: CorpusSpec = settings["corpus"]
    positions: dict[str, list[np.ndarray]] = {source.name: [] for source in corpus.sources}
    start = 0
    for (source, _), array in zip(keys, arrays):
        count = len(array["ids"])
        positions[source].append(start + np.flatnonzero(keep[start:start + count]))
        start += count
    total = start
    global_sizes = np.concatenate([a["nbytes"] for a in arrays]) if arrays else np.zeros(0, dtype=np.int64)
    chosen = {name: np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for name, p in positions.items()}
    sizes = {name: global_sizes[index] for name, index in chosen.items()}
    counts, report = mixture.sample(sizes, corpus.normalized_weights(), corpus.target_tokens,
                                    corpus.target_documents, corpus.seed)
    repeat = np.zeros(total, dtype=np.int64)
    for name, index in chosen.items():
        repeat[index] = counts[name]
    return repeat, report


def run_stage(settings: dict, stage_dir: Path, metrics: MetricsWriter) -> dict:
    total_weight = sum(source.weight for source in settings["corpus"].sources)
    if abs(total_weight - 1.0) > 1e-6:
        log("data", f"warning: source weights sum to {total_weight:g}; they are normalised to sum to 1")
    filters = build_filters(settings["filters"], settings["spec_dir"], stage_dir / "models")
    started = time.perf_counter()
    keys = filter_parts(settings, stage_dir, filters, metrics)
    filter_seconds = time.perf_counter() - started
    if not keys:
        raise DataError("the corpus sources produced no documents")
    part_stats = [json.loads(part_path(stage_dir, s, i, ".json").read_text()) for s, i in keys]
    stats = merge_part_stats(part_stats, [built.name for built in filters])

    started = time.perf_counter()
    metrics.write(event="phase", phase="dedup")
    arrays = load_part_arrays(stage_dir, keys)
    result = run_dedup(settings, stage_dir, keys, arrays, metrics)
    dedup_seconds = time.perf_counter() - started
    ids = [str(i) for a in arrays for i in a["ids"]]
    sources = [s for (s, _), a in zip(keys, arrays) for _ in range(len(a["ids"]))]
    write_removed(stage_dir, result, ids, sources)
    log("data", f"dedup: {result.exact_removed} exact and {result.near_removed} near duplicates removed "
                f"({dedup_seconds:.1f} s)")

    metrics.write(event="phase", phase="mixture and output")
    repeat, mixture_report = mix(settings, keys, arrays, result.keep)
    mixture_report["warnings"] = mixture.drift_warnings(mixture_report, settings["corpus"].mixture_tolerance)
    for warning in mixture_report["warnings"]:
        log("data", f"warning: {warning}")
    offsets = list(itertools.accumulate([len(a["ids"]) for a in arrays], initial=0))[:-1]
    files = write_output(stage_dir, keys, repeat, offsets, arrays)
    atomic_write_json(stage_dir / "manifest.json", {"format": "specc-documents-v1", "files": files})

    documents_filtered = sum(p["documents_in"] for p in part_stats)
    stats.update(
        dedup={"exact_removed": result.exact_removed, "exact_clusters": result.exact_clusters,
               "near_removed": result.near_removed, "near_clusters": result.near_clusters,
               "documents_in": len(ids), "documents_out": int(result.keep.sum()),
               **({"lsh": result.lsh} if result.lsh else {}),
               "by_source": dedup_by_source(result.duplicate_of, sources)},
        mixture=mixture_report,
        output={"documents": sum(f["documents"] for f in files), "bytes": sum(f["bytes"] for f in files),
                "files": len(files)},
        throughput={"filter_docs_per_s": round(documents_filtered / max(filter_seconds, 1e-9), 1),
                    "filter_docs_per_core_s": round(documents_filtered / max(stats["worker_seconds"], 1e-9), 1),
                    "dedup_docs_per_s": round(len(ids) / max(dedup_seconds, 1e-9), 1),
                    "filter_seconds": round(filter_seconds, 3), "dedup_seconds": round(dedup_seconds, 3),
                    "num_workers": settings["dedup"].num_workers},
    )
    atomic_write_json(stage_dir / "stats.json", stats)
    atomic_write_text(stage_dir / "summary.txt", summary_text(stats))
    metrics.write(event="done", documents_out=stats["output"]["documents"], bytes_out=stats["output"]["bytes"],
                  exact_removed=result.exact_removed, near_removed=result.near_removed)
    return stats


def run_array_task(settings: dict, stage_dir: Path, shard: tuple[int, int]) -> None:
    """Phase 1 for one task of the job array; its metrics go to a file of its own."""
    filters = build_filters(settings["filters"], settings["spec_dir"], stage_dir / "models" / f"task-{shard[0]}")
    with MetricsWriter(stage_dir / f"metrics.task-{shard[0]}.jsonl") as metrics:
        keys = filter_parts(settings, stage_dir, filters, metrics, shard)
    if keys and (settings["dedup"].minhash is not None or settings["dedup"].exact):
        job = dedup_job(settings, stage_dir, keys)
        band_parts(job, [p for p in range(len(keys)) if p % shard[1] == shard[0]], 1)
    log("data", f"array task {shard[0] + 1}/{shard[1]}: filtered, signed and scattered the band keys of its share "
                f"of {len(keys)} part(s)")


@skips_when_complete
def run(config: dict) -> None:
    """Entry point: `python -m specc.runtime <config.json>` with `"stage": "data"`."""
    stage_dir = Path(config["run_dir"]) / "data"
    try:
        settings = parse_stage_config(config.get("params", {}))
        with storage_errors(stage_dir, "data outputs under"):
            prepare_stage_dir(stage_dir, config)
            if os.environ.get(DEDUP_PHASE) == "buckets":
                run_bucket_task(settings, stage_dir, int(os.environ["SLURM_ARRAY_TASK_ID"]))
                return
            shard = array_shard(settings)
            if shard is not None:
                run_array_task(settings, stage_dir, shard)
                return
            with MetricsWriter(stage_dir / "metrics.jsonl") as metrics:
                stats = run_stage(settings, stage_dir, metrics)
    except (DataError, StageError) as error:
        raise SystemExit(f"specc data: error: {error}") from None
    print(summary_text(stats))
    # what the tokenize stage reads: the manifest and the mixed output files it lists
    mark_success(stage_dir, config, outputs=["manifest.json", "output"], documents_out=stats["output"]["documents"],
                 bytes_out=stats["output"]["bytes"])
