"""Reading speed of the corpus formats, and the cost of the pre-flight's schema check.

    .venv/bin/python benchmarks/read_formats.py [--documents 100000] [--runs 3]

Writes the same generated documents (the synthetic prose source) as jsonl, jsonl.gz, one parquet
file, a parquet directory of 10 shards and a `datasets` `save_to_disk` directory (Arrow IPC stream,
10 shards), then prints the median over `--runs` of: documents/s through `iter_source` (what the
data stage's readers yield), and the seconds R280 takes to read every file's schema.
Figures depend on the machine and on what else runs on it: compare within one run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]

from data_helpers import write_saved_dataset  # noqa: E402
from specc.runtime.data.formats import read_schema  # noqa: E402
from specc.runtime.data.sources import iter_source, schema_problem, source_files  # noqa: E402
from specc.runtime.data.synthetic import generate  # noqa: E402
from specc.spec.data import FileSource, SyntheticSource  # noqa: E402

SHARDS = 10


def write_corpus(base: Path, count: int) -> dict[str, str]:
    records = [{"text": r.document.text, "id": r.document.id}
               for r in generate(SyntheticSource(type="synthetic", name="prose", num_documents=count, seed=5))]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (base / "docs.jsonl").write_text(lines)
    with gzip.open(base / "docs.jsonl.gz", "wt", compresslevel=6) as stream:
        stream.write(lines)
    columns = {"text": [r["text"] for r in records], "id": [r["id"] for r in records]}
    pq.write_table(pa.table(columns), base / "docs.parquet")
    (base / "pq").mkdir()
    size = -(-count // SHARDS)
    for k in range(SHARDS):
        pq.write_table(pa.table({key: values[k * size:(k + 1) * size] for key, values in columns.items()}),
                       base / "pq" / f"part-{k:02d}.parquet")
    write_saved_dataset(base / "saved", columns, shards=SHARDS)
    return {"jsonl": "docs.jsonl", "jsonl.gz": "docs.jsonl.gz", "parquet file": "docs.parquet",
            "parquet dir (10)": "pq", "save_to_disk (10)": "saved"}


def read_rate(source: FileSource, base: Path) -> tuple[float, int]:
    started = time.perf_counter()
    count = sum(1 for _ in iter_source(source, base))
    return count / (time.perf_counter() - started), count


def schema_seconds(source: FileSource, base: Path) -> float:
    started = time.perf_counter()
    for path, kind in source_files(source, base):
        assert schema_problem(read_schema(path, kind, path.name), source) is None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        paths = write_corpus(base, args.documents)
        print(f"{args.documents:,} documents, median of {args.runs} runs")
        print(f"{'format':20s} {'docs/s':>10s} {'MB on disk':>11s} {'schema check s':>15s}")
        for name, path in paths.items():
            source = FileSource(name="web", path=path)
            rates, seconds = [], []
            for _ in range(args.runs):
                rate, count = read_rate(source, base)
                assert count == args.documents
                rates.append(rate)
                seconds.append(schema_seconds(source, base))
            size = sum(p.stat().st_size for p, _ in source_files(source, base)) / 1e6
            print(f"{name:20s} {statistics.median(rates):>10,.0f} {size:>11.1f} {statistics.median(seconds):>15.4f}")


if __name__ == "__main__":
    main()
