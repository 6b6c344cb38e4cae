"""Exact and near-duplicate detection (datasketch MinHash + MinHashLSH): signatures, banding, and
the single-process reference dedup.

The data stage deduplicates with `specc.runtime.data.sharded_dedup` (same signatures, banding and
verification, no index holding the corpus); `deduplicate` below is the single-process reference the
sharded dedup is scored against (tests/data) and the dedup rate the plan is calibrated with
(benchmarks/data_rates.py).

Signatures are computed where documents are filtered (in the worker processes, one part
at a time) and saved as uint32 `.npy` arrays; the index is then built in one pass over
all parts in corpus order. Only kept documents enter the index, and a document whose
LSH query returns candidates is removed as a duplicate of the earliest candidate: the
first document of each cluster is kept, so the result is deterministic and independent
of the number of workers. MinHash estimates Jaccard similarity of word n-gram shingle
sets (Broder 1997); LSH banding picks candidate pairs with probability
1 - (1 - s^rows)^bands (Leskovec, Rajaraman & Ullman, Mining of Massive Datasets, ch. 3).

Choosing bands x rows: datasketch's default minimises the summed false-positive and
false-negative areas, which puts the S-curve's midpoint above the threshold (for 0.8 with
128 permutations it gives 9 x 13, only 40% recall at similarity 0.8). specc wants the
threshold to mean "pairs at least this similar are found", so it takes the steepest
banding whose candidate probability at the threshold is at least 0.97, and then verifies
each candidate by its MinHash similarity estimate against `threshold - 2 sigma`
(sigma = sqrt(t (1 - t) / num_perm), the estimator's standard error), which removes the
low-similarity candidates that the permissive banding lets through.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from specc.runtime.data.banding import candidate_probability, lsh_params, verify_threshold  # noqa: F401 (re-exported)
from specc.spec.data import MinHashSpec

WORD = re.compile(r"\w+", re.UNICODE)
SCHEME = "affine32"
"""datasketch 2's default: 32-bit affine permutations, so a signature is num_perm uint32s."""


def normalized_hash(text: str) -> int:
    """64-bit hash of the text lowercased with whitespace collapsed (exact-duplicate key)."""
    normalized = " ".join(text.lower().split())
    return int.from_bytes(hashlib.blake2b(normalized.encode(), digest_size=8).digest(), "little")


def shingles(text: str, n: int) -> set[bytes]:
    """The set of word n-grams (lowercased); a text shorter than n words is one shingle."""
    words = WORD.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def _identity(value: int) -> int:
    return value


NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
"""An odd 64-bit constant (2^64 / golden ratio) for the polynomial n-gram hash."""
WORD_CACHE_LIMIT = 1_000_000


class Signer:
    """Computes MinHash signatures with one shared set of permutations.

    Shingles are hashed without a Python call per shingle: each distinct word is hashed
    once (blake2b, stable across processes, cached), and a word n-gram's hash is the
    polynomial sum(h(w_i) * M^(n-1-i)) mod 2^64 over the window, computed for all windows
    at once with numpy and folded to the 32 bits datasketch's affine32 scheme takes.
    Equal n-grams get equal hashes, so the signature is a MinHash of the n-gram set.
    """

    def __init__(self, spec: MinHashSpec):
        self.spec = spec
        self._template = MinHash(num_perm=spec.num_perm, seed=spec.seed, hashfunc=_identity, scheme=SCHEME)
        self._words: dict[str, int] = {}

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        cache = self._words
        if len(cache) > WORD_CACHE_LIMIT:
            cache.clear()
        values = []
        for word in words:
            value = cache.get(word)
            if value is None:
                value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                cache[word] = value
            values.append(value)
        return np.array(values, dtype=np.uint64)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """32-bit hashes of the word n-grams (one shingle for a text shorter than n words)."""
        words = self._word_hashes(WORD.findall(text.lower()))
        n = min(self.spec.ngram, max(len(words), 1))
        windows = max(len(words) - n + 1, 1)
        hashes = np.zeros(windows, dtype=np.uint64)
        for offset in range(min(n, len(words))):
            hashes = hashes * NGRAM_MULTIPLIER + words[offset:offset + windows]
        return (hashes >> np.uint64(32)) ^ (hashes & np.uint64(0xFFFFFFFF))

    def signature(self, text: str) -> np.ndarray:
        minhash = self._template.copy()
        minhash.update_batch(self.shingle_hashes(text).tolist())
        return minhash.hashvalues

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        rows = [self.signature(text) for text in texts]
        if not rows:
            return np.zeros((0, self.spec.num_perm), dtype=np.uint32)
        return np.stack(rows).astype(np.uint32)


class SignatureStore:
    """Random access to the signatures of earlier parts (memory-mapped, not loaded)."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.starts: list[int] = []

    def add(self, start: int, part: np.ndarray) -> None:
        self.parts.append(part)
        self.starts.append(start)

    def get(self, index: int) -> np.ndarray:
        position = bisect.bisect_right(self.starts, index) - 1
        return self.parts[position][index - self.starts[position]]


@dataclass
class DedupResult:
    keep: np.ndarray
    """bool per document in corpus order."""
    exact_removed: int = 0
    near_removed: int = 0
    exact_clusters: int = 0
    near_clusters: int = 0
    duplicate_of: dict[int, tuple[int, str]] = field(default_factory=dict)
    """removed document index -> (the kept document it duplicates, "exact" or "near")."""
    lsh: dict = field(default_factory=dict)


def exact_dedup(hashes: np.ndarray, keep: np.ndarray, result: DedupResult) -> None:
    first: dict[int, int] = {}
    representatives = set()
    for index, value in enumerate(hashes.tolist()):
        if not keep[index]:
            continue
        if value in first:
            keep[index] = False
            result.duplicate_of[index] = (first[value], "exact")
            representatives.add(first[value])
            result.exact_removed += 1
        else:
            first[value] = index
    result.exact_clusters = len(representatives)


def near_dedup(signatures: Iterator[np.ndarray], keep: np.ndarray, spec: MinHashSpec, result: DedupResult) -> None:
    """Query-then-insert over signatures in corpus order (one array per part)."""
    lsh = MinHashLSH(threshold=spec.threshold, num_perm=spec.num_perm, params=lsh_params(spec))
    needed = verify_threshold(spec)
    store = SignatureStore()
    representatives = set()
    index = 0
    for part in signatures:
        part = np.asarray(part)  # a plain view: indexing a memmap row by row is slow
        store.add(index, part)
        for row in part:
            if keep[index]:
                minhash = LeanMinHash(seed=spec.seed, hashvalues=row, scheme=SCHEME)
                candidates = sorted(lsh.query(minhash))
                original = next((c for c in candidates if np.mean(store.get(c) == row) >= needed), None)
                if original is not None:
                    keep[index] = False
                    result.duplicate_of[index] = (original, "near")
                    representatives.add(original)
                    result.near_removed += 1
                else:
                    lsh.insert(index, minhash, check_duplication=False)
            index += 1
    result.near_clusters = len(representatives)
    result.lsh = index_report(lsh)


def index_report(lsh: MinHashLSH) -> dict:
    """Bands, rows and the in-memory size of the index (keys and hash tables, Python objects included)."""
    size = 0
    for table in lsh.hashtables:
        storage = getattr(table, "_dict", {})
        size += sys.getsizeof(storage)
        for key, members in storage.items():
            size += sys.getsizeof(key) + sys.getsizeof(members)
    keys = getattr(lsh.keys, "_dict", {})
    size += sys.getsizeof(keys) + sum(sys.getsizeof(value) for value in keys.values())
    return {"bands": lsh.b, "rows": lsh.r, "indexed_documents": len(keys), "approx_bytes": size}


def deduplicate(hashes: np.ndarray, signatures: Iterable[np.ndarray] | None, exact: bool,
                spec: MinHashSpec | None) -> DedupResult:
    keep = np.ones(len(hashes), dtype=bool)
    result = DedupResult(keep)
    if exact:
        exact_dedup(hashes, keep, result)
    if spec is not None and signatures is not None:
        near_dedup(iter(signatures), keep, spec, result)
    return result
