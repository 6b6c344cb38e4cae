"""Exact and MinHash dedup in sharded phases, each a Slurm job array (or a local loop over task ids).

The single-process dedup (`specc.runtime.data.dedup.near_dedup`) holds one LSH index of every
kept document (~5 KiB each: 5 TiB at a billion documents). Here no task holds the whole corpus,
in the manner of datatrove's MinHash pipeline (signatures -> buckets -> cluster -> filter):

  A `bands`    task t of T, one per input part p with p % T == t: signs the part (or reads the
               signatures the data stage's filter phase wrote), hashes every band of every
               signature to a 64-bit key and writes (key, doc) to one file per bucket task,
               chosen by key range; exact keys (normalised-text hash) likewise.
  B `buckets`  task t: reads only the keys in its range (~N x bands / T of them), sorts them,
               and in every bucket of two or more documents pairs each document with the
               earliest earlier member whose MinHash similarity estimate passes the
               verification threshold (the same bands x rows and `threshold - 2 sigma` check as
               the single-process dedup); exact buckets pair each copy with the first.
  C `clusters` one task: connected components of all pairs; each component keeps its earliest
               document (the single-process rule: the first document of a cluster is kept).
  D `filter`   task t, the parts p % T == t: writes each part's kept documents.

A document's id is (part << 32 | row), so sorting ids is corpus order and no task needs the
offsets of other parts. A bucket is wholly inside one task's key range, so the pairs, hence the
kept set, do not depend on the number of tasks. Band keys collide with probability ~2^-64 per
pair of entries; a collision only adds a candidate, which verification then rejects.

Difference from the single-process dedup: that one removes a document when it matches an
earlier *kept* document (query-then-insert), this one removes every document connected to an
earlier one through a chain of verified pairs (A~B, B~C, A!~C: one-process keeps A and C, this
keeps A). Chains are what connected components buy: they need no sequential pass over the corpus.

The data stage (`specc.runtime.data.stage`) runs these phases on its filtered parts (its array
tasks call `band_part` for theirs; the bucket array runs `run_buckets`; its own job the rest, with
its output phase as the filter). Per-task memory (docs/formulas.md section 10):
`specc.plan.data_stage.sharded_dedup_memory`; the bucket-task count: `specc.plan.data_stage.bucket_tasks`.
"""

from __future__ import annotations

import argparse
import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specc.runtime.data.dedup import DedupResult, Signer, lsh_params, normalized_hash, verify_threshold
from specc.runtime.data.documents import read_documents, write_documents
from specc.spec.data import MinHashSpec

MANIFEST = "sharded-dedup.json"
PHASES = ("bands", "buckets", "clusters", "filter")
ROW_BITS = 32
CACHED_ROWS = 4096
"""Signature rows a bucket task keeps per bucket (4096 x num_perm x 4 B = 2 MiB at 128 permutations):
a bucket of a million copies costs reads, not memory."""
MIX = np.uint64(0x9E3779B97F4A7C15)


def doc_id(part: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(part) << np.uint64(ROW_BITS)) | rows.astype(np.uint64)


def split_id(ident: int) -> tuple[int, int]:
    return ident >> ROW_BITS, ident & ((1 << ROW_BITS) - 1)


def _splitmix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al., OOPSLA 2014): spreads keys evenly over the range."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: a hash of each band's `rows` values and the band's index, so the
    same values in two bands are different buckets (datasketch keeps one table per band)."""
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            value = np.full(len(signatures), band + 1, dtype=np.uint64)
            for column in signatures[:, band * rows:(band + 1) * rows].T:
                value = value * MIX + column.astype(np.uint64)
            keys[:, band] = _splitmix(value)
    return keys


def bucket_task(keys: np.ndarray, tasks: int) -> np.ndarray:
    """The task owning each key: the 64-bit range cut into `tasks` equal intervals (top 32 bits)."""
    return ((keys >> np.uint64(32)) * np.uint64(tasks)) >> np.uint64(32)


@dataclass
class Job:
    """The manifest every phase reads: parts in corpus order, the dedup settings, the task count."""

    workdir: Path
    parts: list[dict]
    """{"documents": .jsonl.gz, "signatures": .npy or None, "hashes": .npz with a `hash` array or None}."""
    tasks: int
    exact: bool
    minhash: MinHashSpec | None

    @classmethod
    def load(cls, workdir: Path) -> Job:
        data = json.loads((workdir / MANIFEST).read_text())
        minhash = MinHashSpec.model_validate(data["minhash"]) if data["minhash"] else None
        return cls(workdir, data["parts"], data["tasks"], data["exact"], minhash)

    def save(self) -> None:
        """Atomic: every array task of the data stage writes the same manifest, maybe at once."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = {"parts": self.parts, "tasks": self.tasks, "exact": self.exact,
                "minhash": self.minhash.model_dump() if self.minhash else None}
        temporary = self.workdir / f".{MANIFEST}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        temporary.replace(self.workdir / MANIFEST)

    def own_parts(self, task: int) -> list[int]:
        return [p for p in range(len(self.parts)) if p % self.tasks == task]

    def signature_path(self, part: int) -> Path:
        return Path(self.parts[part].get("signatures") or self.workdir / "signatures" / f"p{part:05d}.npy")


def prepare(workdir: Path, parts: list[dict], tasks: int, exact: bool, minhash: MinHashSpec | None) -> Job:
    """Write the manifest (the one step before the arrays run)."""
    job = Job(Path(workdir), parts, tasks, exact, minhash)
    job.save()
    return job


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Atomic: a rerun task (Slurm requeue) never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(path)


def _scatter(directory: Path, part: int, keys: np.ndarray, ids: np.ndarray, tasks: int) -> None:
    owners = bucket_task(keys, tasks)
    for task in range(tasks):
        chosen = owners == task
        _save(directory / f"t{task:04d}" / f"p{part:05d}.npz", key=keys[chosen], doc=ids[chosen])


# --- phase A ------------------------------------------------------------------------------

def run_bands(job: Job, task: int) -> None:
    signer = Signer(job.minhash) if job.minhash else None
    for part in job.own_parts(task):
        band_part(job, part, signer)


def bands_marker(job: Job, part: int) -> Path:
    return job.workdir / "bands-done" / f"p{part:05d}"


def band_part(job: Job, part: int, signer: Signer | None) -> None:
    """Phase A for one part (the data stage's array tasks call it for the parts they filtered);
    a marker written last lets a rerun or the merge job skip the parts already scattered."""
    marker = bands_marker(job, part)
    if marker.exists():
        return
    entry = job.parts[part]
    texts = None
    if entry.get("hashes"):
        with np.load(entry["hashes"]) as archive:
            hashes = archive["hash"].astype(np.uint64)
    else:
        texts = [d.text for d in read_documents(Path(entry["documents"]))]
        hashes = np.array([normalized_hash(t) for t in texts], dtype=np.uint64)
    ids = doc_id(part, np.arange(len(hashes)))
    if job.exact:
        _scatter(job.workdir / "exact", part, hashes, ids, job.tasks)
    if signer is not None:
        path = job.signature_path(part)
        if not entry.get("signatures"):
            if texts is None:
                texts = [d.text for d in read_documents(Path(entry["documents"]))]
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(temporary, signer.signatures(texts))
            temporary.replace(path)
        bands, rows = lsh_params(job.minhash)
        keys = band_keys(np.load(path), bands, rows).reshape(-1)
        _scatter(job.workdir / "bands", part, keys, np.repeat(ids, bands), job.tasks)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


# --- phase B ------------------------------------------------------------------------------

class SignatureReader:
    """Reads single signature rows with pread: the bucket task touches only the rows of documents
    in buckets of two or more, and none of them stays mapped in its memory."""

    def __init__(self, job: Job):
        self.job = job
        self.files: dict[int, tuple[int, int]] = {}

    def row(self, ident: int) -> np.ndarray:
        part, row = split_id(ident)
        if part not in self.files:
            path = self.job.signature_path(part)
            header = np.load(path, mmap_mode="r")
            self.files[part] = (os.open(path, os.O_RDONLY), header.offset)
        descriptor, offset = self.files[part]
        size = self.job.minhash.num_perm * 4
        return np.frombuffer(os.pread(descriptor, size, offset + row * size), dtype=np.uint32)

    def close(self) -> None:
        for descriptor, _ in self.files.values():
            os.close(descriptor)


def _load_bucket_entries(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    keys, ids = [], []
    for path in sorted(directory.glob("p*.npz")):
        with np.load(path) as archive:
            keys.append(archive["key"])
            ids.append(archive["doc"])
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    keys_all, ids_all = np.concatenate(keys), np.concatenate(ids)
    del keys, ids
    order = np.lexsort((ids_all, keys_all))
    return keys_all[order], ids_all[order]


def _groups(keys: np.ndarray):
    """(start, end) of every run of equal keys with two or more members."""
    if len(keys) < 2:
        return
    edges = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(keys)]))
    for start, end in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
        yield start, end


def exact_pairs(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each later copy paired with the first document of its exact bucket: (later, first)."""
    pairs = [(ident, ids[start]) for start, end in _groups(keys) for ident in ids[start + 1:end].tolist()]
    return np.array(pairs, dtype=np.uint64).reshape(-1, 2)


def near_pairs(keys: np.ndarray, ids: np.ndarray, reader: SignatureReader, needed: float) -> np.ndarray:
    """In each band bucket (ids ascending), each document paired with the earliest earlier member
    its signature agrees with on at least `needed` of the permutations: (later, earlier)."""
    later_ids, earlier_ids = array("Q"), array("Q")  # 8 B per pair, whatever the bucket sizes
    for start, end in _groups(keys):
        members = ids[start:end].tolist()
        cached: dict[int, np.ndarray] = {}  # the earliest members' rows, which every later one tries first

        def row(position: int) -> np.ndarray:
            found = cached.get(position)
            if found is None:
                found = reader.row(members[position])
                if len(cached) < CACHED_ROWS:
                    cached[position] = found
            return found

        for later in range(1, len(members)):
            signature = row(later)
            for earlier in range(later):
                if np.mean(signature == row(earlier)) >= needed:
                    later_ids.append(members[later])
                    earlier_ids.append(members[earlier])
                    break
    pairs = np.stack([np.frombuffer(later_ids, np.uint64), np.frombuffer(earlier_ids, np.uint64)], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(-1, 2)  # one pair found in several bands


def pairs_path(job: Job, task: int) -> Path:
    return job.workdir / "pairs" / f"t{task:04d}.npz"


def run_buckets(job: Job, task: int) -> None:
    """Phase B for one key range; a task whose pairs exist (a requeued task, the data stage's merge
    job after the bucket array) is skipped: the file is written atomically, so it is complete."""
    out = pairs_path(job, task)
    if out.exists():
        return
    found = {"exact": np.zeros((0, 2), np.uint64), "near": np.zeros((0, 2), np.uint64)}
    if job.exact:
        found["exact"] = exact_pairs(*_load_bucket_entries(job.workdir / "exact" / f"t{task:04d}"))
    if job.minhash is not None:
        reader = SignatureReader(job)
        try:
            keys, ids = _load_bucket_entries(job.workdir / "bands" / f"t{task:04d}")
            found["near"] = near_pairs(keys, ids, reader, verify_threshold(job.minhash))
        finally:
            reader.close()
    _save(out, **found)


# --- phase C ------------------------------------------------------------------------------

def components(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, representative of each): connected components by min-label propagation with
    pointer jumping (the partition union-find gives, computed with array operations). Nodes are
    sorted ids, so the smallest label of a component is its earliest document."""
    if len(pairs) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    nodes, inverse = np.unique(pairs.reshape(-1), return_inverse=True)
    left, right = inverse.reshape(-1, 2).T
    label = np.arange(len(nodes))
    while True:
        lowest = np.minimum(label[left], label[right])
        updated = label.copy()
        np.minimum.at(updated, left, lowest)
        np.minimum.at(updated, right, lowest)
        while True:  # pointer jumping: each label to its label's label until it is a root
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, label):
            return nodes, nodes[label]
        label = updated


def run_clusters(job: Job, task: int = 0) -> None:
    """One task: the pairs of every bucket task -> the dropped documents and their representatives."""
    exact, near = [], []
    for path in sorted((job.workdir / "pairs").glob("t*.npz")):
        with np.load(path) as archive:
            exact.append(archive["exact"])
            near.append(archive["near"])
    exact_all = np.concatenate(exact) if exact else np.zeros((0, 2), np.uint64)
    pairs = np.concatenate([exact_all] + near) if exact or near else np.zeros((0, 2), np.uint64)
    nodes, representative = components(pairs)
    dropped = nodes != representative
    exact_later = np.unique(exact_all[:, 0])
    kind_exact = np.isin(nodes[dropped], exact_later)
    _save(job.workdir / "drops.npz", doc=nodes[dropped], original=representative[dropped], exact=kind_exact,
          exact_clusters=np.array(len(np.unique(exact_all[:, 1]))),
          near_clusters=np.array(len(np.unique(representative[dropped][~kind_exact]))))


# --- phase D ------------------------------------------------------------------------------

def run_filter(job: Job, task: int) -> None:
    with np.load(job.workdir / "drops.npz") as archive:
        dropped = archive["doc"]
    for part in job.own_parts(task):
        low, high = np.searchsorted(dropped, np.array([part << ROW_BITS, (part + 1) << ROW_BITS], dtype=np.uint64))
        gone = set((dropped[low:high] & np.uint64((1 << ROW_BITS) - 1)).tolist())
        documents = read_documents(Path(job.parts[part]["documents"]))
        write_documents(job.workdir / "kept" / f"p{part:05d}.jsonl.gz",
                        (d for row, d in enumerate(documents) if row not in gone))


RUNNERS = {"bands": run_bands, "buckets": run_buckets, "clusters": run_clusters, "filter": run_filter}


def phase_tasks(job: Job, phase: str) -> int:
    """Array width of a phase: the clustering is one task, the others the job's task count."""
    return 1 if phase == "clusters" else job.tasks


def run_local(workdir: Path, workers: int = 1, phases: tuple[str, ...] = PHASES) -> None:
    """Every phase in order, each as a loop over its task ids (what the Slurm arrays run), the
    tasks of a phase in a pool of `workers` processes when there is more than one of each."""
    job = Job.load(Path(workdir))
    for phase in phases:
        run_tasks(job, phase, list(range(phase_tasks(job, phase))), workers)


def _run_one(workdir: str, phase: str, task: int) -> None:
    RUNNERS[phase](Job.load(Path(workdir)), task)


def run_tasks(job: Job, phase: str, tasks: list[int], workers: int) -> None:
    """Some tasks of one phase: in this process, or in a spawned pool (independent tasks, files in
    and out, so the order they finish in does not matter)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            RUNNERS[phase](job, task)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        pool.starmap(_run_one, [(str(job.workdir), phase, task) for task in tasks])


def result(job: Job, counts: list[int]) -> DedupResult:
    """The outcome in the single-process form (keep per document in corpus order), given each
    part's document count: for comparisons with `dedup.deduplicate` and for reports."""
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    keep = np.ones(int(offsets[-1]), dtype=bool)
    out = DedupResult(keep)
    with np.load(job.workdir / "drops.npz") as archive:
        def flat(ids: np.ndarray) -> np.ndarray:
            return offsets[(ids >> np.uint64(ROW_BITS)).astype(np.int64)] + (ids & np.uint64(0xFFFFFFFF)).astype(np.int64)
        docs, originals, exact = flat(archive["doc"]), flat(archive["original"]), archive["exact"]
        keep[docs] = False
        out.duplicate_of = {int(d): (int(o), "exact" if e else "near") for d, o, e in zip(docs, originals, exact)}
        out.exact_removed, out.near_removed = int(exact.sum()), int((~exact).sum())
        out.exact_clusters, out.near_clusters = int(archive["exact_clusters"]), int(archive["near_clusters"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=PHASES + ("local",))
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--task", type=int, default=None, help="task id (default: $SLURM_ARRAY_TASK_ID, else 0)")
    args = parser.parse_args(argv)
    if args.phase == "local":
        run_local(args.workdir)
        return
    job = Job.load(args.workdir)
    task = args.task if args.task is not None else int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    if not 0 <= task < phase_tasks(job, args.phase):
        raise SystemExit(f"sharded dedup: task {task} is outside 0..{phase_tasks(job, args.phase) - 1} of {args.phase}")
    RUNNERS[args.phase](job, task)


if __name__ == "__main__":
    main()
