"""Deterministic, resumable batches of fixed-length sequences from the token shards.

The train split is cut into `(num_tokens - 1) // seq_len` non-overlapping windows of
`seq_len + 1` tokens (inputs and shifted targets). Epoch e visits them in the order of a
permutation seeded by (seed, e). Optimizer step s consumes global sequences
[s x B, (s + 1) x B) of that endless stream, so the data position is the step number
alone: resuming needs no loader state, and every layout sees the same global batch.
Data-parallel rank r takes the r-th contiguous slice of B / dp sequences and cuts it into
micro-batches, so rank r's micro-batch j equals a single process's micro-batch
r x grad_accum + j when both use the same micro-batch size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specc.integrity import IntegrityError, file_digest, listing
from specc.runtime.io import atomic_write_json
from specc.runtime.shards import TokenSplit, open_split, shard_problems


@dataclass
class SequenceStream:
    """Random access to the endless, epoch-shuffled stream of training sequences."""

    split: TokenSplit
    seq_len: int
    seed: int
    shuffle: bool = True

    def __post_init__(self) -> None:
        self.num_sequences = (self.split.num_tokens - 1) // self.seq_len
        if self.num_sequences < 1:
            raise ValueError(f"the split has {self.split.num_tokens} tokens, fewer than one sequence of "
                             f"seq_len + 1 = {self.seq_len + 1}")
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                self._orders = {epoch: rng.permutation(self.num_sequences)}
            else:
                self._orders = {epoch: np.arange(self.num_sequences)}
        return self._orders[epoch]

    def sequences(self, start: int, count: int) -> torch.Tensor:
        """Global sequences [start, start + count) as a (count, seq_len + 1) int64 tensor."""
        rows = []
        for index in range(start, start + count):
            epoch, k = divmod(index, self.num_sequences)
            window = int(self._order(epoch)[k])
            rows.append(self.split.window(window * self.seq_len, self.seq_len + 1))
        return torch.from_numpy(np.stack(rows))


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch of B sequences splits over dp ranks and micro-batches."""

    global_batch: int
    dp: int
    micro_batch: int

    def __post_init__(self) -> None:
        if self.global_batch % (self.dp * self.micro_batch):
            raise ValueError(f"global batch ({self.global_batch}) is not divisible by dp ({self.dp}) x "
                             f"micro_batch ({self.micro_batch}) = {self.dp * self.micro_batch}")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.dp

    @property
    def grad_accum(self) -> int:
        return self.local_batch // self.micro_batch


def local_batch(stream: SequenceStream, layout: BatchLayout, step: int, dp_rank: int) -> torch.Tensor:
    """This dp rank's (local_batch, seq_len + 1) slice of step `step`'s global batch."""
    start = step * layout.global_batch + dp_rank * layout.local_batch
    return stream.sequences(start, layout.local_batch)


def verify_shards_once(shard_dir: Path, record: Path, rank: int, world: int, gather) -> None:
    """Re-hash every token shard the first time a run trains on them (collective: the ranks
    share the files, `gather` is an all-gather of Python objects); `record` remembers which
    meta.json was verified so that resuming costs only the stats of `open_split`.

    Why once: re-hashing costs 0.7 s per GiB per reader (`benchmarks/checksum_cost.py`), minutes
    per launch for a trillion-token corpus, while a size change (truncation, a missing shard) is
    still caught on every open."""
    expected = {"shard_dir": str(shard_dir.resolve()), "meta": file_digest(shard_dir / "meta.json")}
    try:
        if json.loads(record.read_text()) == expected:
            return
    except (OSError, ValueError):
        pass
    problems = sorted({p for share in gather(shard_problems(shard_dir, True, rank, world)) for p in share})
    if problems:
        raise IntegrityError(f"token shards of {shard_dir}: " + listing(problems)
                             + "; re-run the tokenize stage (relaunch: damaged outputs make it run again)")
    if rank == 0:
        atomic_write_json(record, expected)


def open_streams(shard_dir: Path, seq_len: int, seed: int) -> tuple[SequenceStream, SequenceStream]:
    """(train, validation) streams; validation is read in file order, no shuffle."""
    train = SequenceStream(open_split(shard_dir, "train"), seq_len, seed)
    validation = SequenceStream(open_split(shard_dir, "validation"), seq_len, seed, shuffle=False)
    return train, validation
