"""What checksumming artifacts costs: seconds per GiB hashed while writing and while reading back.

    .venv/bin/python benchmarks/checksum_cost.py [--mib 256] [--repeats 5]

Writes a random buffer of `--mib` MiB to a temporary file three ways and reads it back two ways,
each `--repeats` times, and prints the median seconds per GiB:
  write            plain write + fsync (the baseline every writer pays)
  write+H          the same, hashing each chunk with H as it is written (what specc's writers do)
  read             plain read of the file (page cache warm, as right after a write)
  read+H           `specc.integrity.file_digest` with H (what verification on load costs)
  H in memory      the hash of the buffer alone (the CPU cost)
for H in sha256 (specc's choice, `integrity.HASH`) and blake2b; zlib.crc32 in memory for scale.
xxhash is not measured: it is not a dependency, and sha256 with SHA extensions was fast enough.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from specc.integrity import CHUNK, HASH, file_digest, new_hash

ALGORITHMS = (HASH, "blake2b")


def timed(function, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def write(path: Path, data: bytes, hasher=None) -> None:
    view = memoryview(data)
    with open(path, "wb") as stream:
        for offset in range(0, len(view), CHUNK):
            chunk = view[offset:offset + CHUNK]
            if hasher is not None:
                hasher.update(chunk)
            stream.write(chunk)
        stream.flush()
        os.fsync(stream.fileno())


def read(path: Path) -> None:
    buffer = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as stream:
        while stream.readinto(buffer):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    gib = len(data) / 2**30
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "blob.bin"
        rows = {"write": timed(lambda: write(path, data), args.repeats)}
        for name in ALGORITHMS:
            rows[f"write+{name}"] = timed(lambda: write(path, data, new_hash(name)), args.repeats)
        rows["read"] = timed(lambda: read(path), args.repeats)
        for name in ALGORITHMS:
            rows[f"read+{name}"] = timed(lambda: file_digest(path, name), args.repeats)
        for name in ALGORITHMS:
            rows[f"{name} in memory"] = timed(lambda: hashlib.new(name, data).digest(), args.repeats)
        rows["crc32 in memory"] = timed(lambda: zlib.crc32(data), args.repeats)
    print(f"{args.mib} MiB buffer, median of {args.repeats} runs (seconds per GiB; GiB/s)")
    for name, seconds in rows.items():
        print(f"  {name:28s} {seconds / gib:7.3f} s/GiB  {gib / seconds:6.2f} GiB/s")
    for name in ALGORITHMS:
        added_write = (rows[f"write+{name}"] - rows["write"]) / gib
        added_read = (rows[f"read+{name}"] - rows["read"]) / gib
        print(f"{name}: +{added_write:.3f} s per GiB written, +{added_read:.3f} s per GiB read back")


if __name__ == "__main__":
    main()
