"""The packed token-shard format shared by the tokenize stage (writer) and training (reader).

Layout of a shard directory:
    meta.json                 {"format": "specc-tokens-v1", "dtype": "uint16"|"uint32",
                               "eos_id": int, "vocab_size": int,
                               "splits": {"train": [{"file", "num_tokens", "num_documents"}...],
                                          "validation": [...]}}
    train-00000.bin           flat token ids (numpy memmap), documents separated by EOS
    train-00000.idx.npy       int64 start offset of each document in the .bin
uint16 when the vocabulary fits (< 65536 ids), else uint32 (nanoGPT's layout, plus an index).

Integrity: each shard entry also records `bytes` and `sha256` of the .bin, and `index` (the
.idx.npy's `file`, `bytes`, `sha256`), hashed from memory while writing. Opening a split checks
every shard's size (a stat: a truncated or missing shard is an IntegrityError naming it);
`shard_problems` re-hashes them, which training does once per input (`train.data`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specc.integrity import IntegrityError, entry_problem, listing, read_json, write_bytes
from specc.runtime.io import atomic_write_json

FORMAT = "specc-tokens-v1"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """Appends tokenized documents to size-bounded shards of one split."""

    def __init__(self, directory: Path, split: str, vocab_size: int, eos_id: int,
                 tokens_per_shard: int = 50_000_000):
        self.directory, self.split = directory, split
        self.dtype = dtype_for_vocab(vocab_size)
        self.eos_id = eos_id
        self.tokens_per_shard = tokens_per_shard
        self.shards: list[dict] = []
        self._buffer: list[np.ndarray] = []
        self._starts: list[int] = []
        self._count = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, token_ids: list[int]) -> None:
        """Add one document; an EOS token is appended after it."""
        array = np.asarray(list(token_ids) + [self.eos_id], dtype=self.dtype)
        self._starts.append(self._count)
        self._buffer.append(array)
        self._count += len(array)
        if self._count >= self.tokens_per_shard:
            self._flush()

    def add_many(self, documents: list[list[int] | np.ndarray]) -> None:
        """Add documents as `add` one by one would (the same shards, split after the same
        document), with one concatenation and one range check per shard's share of them."""
        eos = np.array([self.eos_id], dtype=np.int64)
        while documents:
            lengths = np.fromiter((len(d) + 1 for d in documents), np.int64, len(documents))
            ends = np.cumsum(lengths)
            # `add` flushes after the first document that brings the count to tokens_per_shard
            cut = int(np.searchsorted(ends, self.tokens_per_shard - self._count)) + 1
            batch, documents = documents[:cut], documents[cut:]
            ids = np.concatenate([part for d in batch for part in
                                  (d if isinstance(d, np.ndarray) else np.asarray(d, dtype=np.int64), eos)])
            if ids.min() < 0 or ids.max() > np.iinfo(self.dtype).max:
                raise ValueError(f"token id outside {self.dtype} in a {self.split} document")
            self._starts.extend((self._count + ends[:cut] - lengths[:cut]).tolist())
            self._buffer.append(ids.astype(self.dtype))
            self._count += int(ends[len(batch) - 1])
            if self._count >= self.tokens_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        name = f"{self.split}-{len(self.shards):05d}"
        tokens = np.ascontiguousarray(np.concatenate(self._buffer))
        shard = write_bytes(self.directory / f"{name}.bin", memoryview(tokens).cast("B"), "token shard")
        starts = io.BytesIO()
        np.save(starts, np.asarray(self._starts, dtype=np.int64))
        index = write_bytes(self.directory / f"{name}.idx.npy", starts.getbuffer(), "token index")
        self.shards.append({"file": f"{name}.bin", "num_tokens": int(len(tokens)),
                            "num_documents": len(self._starts), **shard,
                            "index": {"file": f"{name}.idx.npy", **index}})
        self._buffer, self._starts, self._count = [], [], 0

    def close(self) -> list[dict]:
        self._flush()
        return self.shards


def write_meta(directory: Path, vocab_size: int, eos_id: int, splits: dict[str, list[dict]]) -> None:
    atomic_write_json(directory / "meta.json", {
        "format": FORMAT, "dtype": dtype_for_vocab(vocab_size).name, "eos_id": eos_id,
        "vocab_size": vocab_size, "splits": splits})


@dataclass
class TokenSplit:
    """All tokens of one split as one read-only sequence of memmaps."""

    arrays: list[np.ndarray]
    eos_id: int
    vocab_size: int

    @property
    def num_tokens(self) -> int:
        return sum(len(a) for a in self.arrays)

    def window(self, start: int, length: int) -> np.ndarray:
        """`length` tokens from global offset `start` (crossing shard boundaries)."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        for array in self.arrays:
            if start >= len(array):
                start -= len(array)
                continue
            take = min(length - filled, len(array) - start)
            out[filled:filled + take] = array[start:start + take]
            filled += take
            start = 0
            if filled == length:
                break
        if filled != length:
            raise IndexError("window runs past the end of the split")
        return out


def read_meta(directory: Path) -> dict:
    """meta.json of a shard directory; IntegrityError naming it when missing or damaged."""
    meta = read_json(directory / "meta.json", "token-shard index")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IntegrityError(f"{directory / 'meta.json'} is not a specc token-shard index (format {FORMAT})")
    return meta


def shard_entries(directory: Path, meta: dict, splits: tuple[str, ...] = ("train", "validation")) -> list[dict]:
    """The manifest entries (`file`, `bytes`, optional `sha256`) of every shard and index file.

    An entry written before shards recorded their bytes is sized from its token count."""
    shards = [shard for split in splits for shard in meta["splits"].get(split, [])]
    return entries_of(shards, np.dtype(meta["dtype"]).itemsize)


def entries_of(shards: list[dict], itemsize: int) -> list[dict]:
    """Manifest entries of shard records: each .bin, then its index (named relative to the .bin's folder)."""
    entries = []
    for shard in shards:
        entries.append({"bytes": shard["num_tokens"] * itemsize, **shard})
        index = shard.get("index")
        if isinstance(index, dict):
            entries.append({**index, "file": (Path(shard["file"]).parent / index["file"]).as_posix()})
    return entries


def shard_problems(directory: Path, checksum: bool = True, rank: int = 0, world: int = 1) -> list[str]:
    """Every shard or index file of `directory` that is missing, resized or (with `checksum`)
    damaged; rank `rank` of `world` re-hashes every world-th file, so ranks share the reading."""
    meta = read_meta(directory)
    return [problem for index, entry in enumerate(shard_entries(directory, meta))
            if (problem := entry_problem(directory / entry["file"], entry,
                                         checksum=checksum and index % world == rank)) is not None]


def open_split(directory: Path, split: str) -> TokenSplit:
    """Memory-map every shard of `split` (train or validation), after checking each one's size."""
    meta = read_meta(directory)
    problems = [problem for entry in shard_entries(directory, meta, (split,))
                if (problem := entry_problem(directory / entry["file"], entry, checksum=False)) is not None]
    if problems:
        raise IntegrityError(f"token shards of {directory}: " + listing(problems)
                             + "; re-run the tokenize stage (relaunch: damaged outputs make it run again)")
    dtype = np.dtype(meta["dtype"])
    arrays = [np.memmap(directory / shard["file"], dtype=dtype, mode="r") for shard in meta["splits"][split]]
    return TokenSplit(arrays, meta["eos_id"], meta["vocab_size"])
