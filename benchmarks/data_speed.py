"""Throughput of the data and tokenize stages on a synthetic corpus.

    .venv/bin/python benchmarks/data_speed.py [--documents 50000] [--datatrove-python /tmp/dtvenv/bin/python]

Prints: docs/s of each filter (one process); MinHash signatures/s (specc's vectorised n-gram
hash vs datasketch's default sha1 via MinHash.bulk); LSH dedup docs/s; the whole data
stage (filters + exact + MinHash dedup) with 1 and 2 worker processes; MinHash dedup alone
with 1 and 2 workers and, given a Python with datatrove installed, datatrove's MinHash
dedup on the same corpus with the same bands x rows (both recalls on planted near
duplicates); byte-level BPE training time and encode tokens/s.
Figures depend on the machine and on what else runs on it: compare within one run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash
from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from data_quality import write_examples  # noqa: E402
from specc.runtime.data.dedup import Signer, deduplicate, lsh_params, normalized_hash, shingles  # noqa: E402
from specc.runtime.data.filters import build_filters  # noqa: E402
from specc.runtime.data.scoring import jaccard  # noqa: E402
from specc.runtime.data.synthetic import generate  # noqa: E402
from specc.runtime.tokenizer.bpe import encode, train_bpe  # noqa: E402
from specc.spec.data import Filter, MinHashSpec, SyntheticSource  # noqa: E402

SOURCE = {"type": "synthetic", "name": "prose", "duplicate_fraction": 0.1, "junk_fraction": 0.1, "seed": 3}
FILTERS = [
    {"type": "length", "min_chars": 200}, {"type": "word_length"}, {"type": "symbols"}, {"type": "repetition"},
    {"type": "language", "languages": ["en"]},
    {"type": "classifier", "positive": "good/*.txt", "negative": "bad/*.txt"},
    {"type": "perplexity", "reference": "reference/*.txt", "max_perplexity": 150},
    {"type": "rules", "block_keywords": ["casino", "lottery"], "block_patterns": [r"\bfree money\b"]},
]


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}"


def bench_filters(documents: list, directory: Path) -> None:
    print(f"\nfilters, one process, {len(documents):,} documents ({sum(len(d.text) for d in documents) / len(documents):,.0f} chars avg):")
    built = build_filters(TypeAdapter(list[Filter]).validate_python(FILTERS), directory, directory / "models")
    for item in built:
        started = time.perf_counter()
        for document in documents:
            item.check(document)
        print(f"  {item.name:20s} {rate(len(documents), time.perf_counter() - started)} docs/s")


def bench_minhash(documents: list, spec: MinHashSpec) -> np.ndarray:
    texts = [d.text for d in documents]
    started = time.perf_counter()
    signatures = Signer(spec).signatures(texts)
    seconds = time.perf_counter() - started
    print(f"\nMinHash ({spec.num_perm} perms, word {spec.ngram}-grams), one process:")
    print(f"  specc Signer (numpy n-gram hash) {rate(len(texts), seconds)} docs/s")
    sample = texts[:min(len(texts), 5000)]
    started = time.perf_counter()
    MinHash.bulk([shingles(t, spec.ngram) for t in sample], num_perm=spec.num_perm, seed=spec.seed)
    print(f"  datasketch MinHash.bulk (sha1)    {rate(len(sample), time.perf_counter() - started)} docs/s")
    hashes = np.array([normalized_hash(t) for t in texts], dtype=np.uint64)
    started = time.perf_counter()
    result = deduplicate(hashes, [signatures], True, spec)
    print(f"  exact + LSH index (query+insert)  {rate(len(texts), time.perf_counter() - started)} docs/s"
          f"   ({result.lsh['bands']}x{result.lsh['rows']}, ~{result.lsh['approx_bytes'] / 2**20:.1f} MiB index)")
    return signatures


def run_stage(config: dict, directory: Path) -> float:
    path = directory / f"{config['stage']}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "specc.runtime", str(path)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stage_config(directory: Path, name: str, workers: int, filters: list, exact: bool) -> dict:
    """The corpus is read from the jsonl.gz files datatrove reads too (not generated in the stage)."""
    source = {"type": "files", "name": "prose", "path": "jsonl/*.jsonl.gz", "id_field": "id"}
    return {"stage": "data", "run_dir": str(directory / name), "params": {
        "corpus": {"sources": [source]}, "filters": filters,
        "dedup": {"exact": exact, "minhash": {"threshold": 0.8}, "num_workers": workers},
        "spec_dir": str(directory), "part_documents": 2000}}


def planted_recall(documents: list, removed: set[str], threshold: float) -> tuple[float, int]:
    """Fraction of planted near-duplicate pairs with true Jaccard >= threshold of which one
    member was removed (the files interleave the corpus, so either may come first); and the
    number of clean documents outside every planted pair that were removed (false positives).
    Junk removed as a duplicate of other junk (symbol soup normalised alike) is not counted."""
    by_id = {d.id: d for d in documents}
    above = [d for d in documents if d.meta["kind"] == "near_dup"
             and jaccard(d.text, by_id[d.meta["original"]].text, 5) >= threshold]
    in_pairs = {d.id for d in documents if "original" in d.meta} | {d.meta["original"] for d in documents
                                                                    if "original" in d.meta}
    false_positives = sum(1 for i in removed if i not in in_pairs and by_id[i].meta["kind"] == "clean")
    found = sum(d.id in removed or d.meta["original"] in removed for d in above)
    return found / max(len(above), 1), false_positives


def removed_ids(run_dir: Path) -> set[str]:
    with gzip.open(run_dir / "data" / "dedup" / "removed.jsonl.gz", "rt") as stream:
        return {json.loads(line)["id"] for line in stream}


def bench_stages(documents: list, directory: Path, datatrove_python: str | None) -> None:
    count = len(documents)
    corpus_dir = directory / "jsonl"
    corpus_dir.mkdir()
    for shard in range(8):
        with gzip.open(corpus_dir / f"{shard:02d}.jsonl.gz", "wt") as stream:
            for document in documents[shard::8]:
                stream.write(json.dumps({"id": document.id, "text": document.text}) + "\n")
    print(f"\ndata stage end to end ({count:,} documents from 8 jsonl.gz files; wall time includes process start-up):")
    for workers in (1, 2):
        seconds = run_stage(stage_config(directory, f"full-{workers}", workers, FILTERS[:4], True), directory)
        print(f"  gopher filters + exact + MinHash, {workers} worker(s)   {rate(count, seconds)} docs/s  ({seconds:.1f} s)")
    bands, rows = lsh_params(MinHashSpec(threshold=0.8))
    print(f"\nMinHash dedup alone, threshold 0.8 ({bands} bands x {rows} rows), recall on planted near-dups >= 0.8:")
    for workers in (1, 2):
        name = f"dedup-{workers}"
        seconds = run_stage(stage_config(directory, name, workers, [], False), directory)
        recall, false_positives = planted_recall(documents, removed_ids(directory / name), 0.8)
        print(f"  specc, {workers} worker(s)        {rate(count, seconds)} docs/s  ({seconds:.1f} s)  "
              f"recall {recall:.4f}, {false_positives} clean documents wrongly removed")
    if datatrove_python is None:
        print("  datatrove: skipped (pass --datatrove-python PYTHON_WITH_DATATROVE)")
        return
    for workers in (1, 2):
        output = subprocess.run([datatrove_python, str(ROOT / "benchmarks" / "datatrove_minhash.py"), str(corpus_dir),
                                 str(directory / f"datatrove-{workers}"), "--bands", str(bands), "--rows", str(rows),
                                 "--workers", str(workers)], check=True, capture_output=True, text=True)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        recall, false_positives = planted_recall(documents, set(result["removed"]), 0.8)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in result["phases"].items())
        print(f"  datatrove, {workers} worker(s)    {rate(count, result['seconds'])} docs/s  ({result['seconds']:.1f} s: "
              f"{phases})  recall {recall:.4f}, {false_positives} clean documents wrongly removed, "
              f"{len(result['removed'])} removed in all")


def bench_tokenizer(documents: list) -> None:
    texts = [d.text for d in documents]
    megabytes = sum(len(t.encode()) for t in texts) / 2**20
    started = time.perf_counter()
    tokenizer = train_bpe(texts, 8192, ["<|endoftext|>", "<|pad|>"], 2)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tokens = sum(len(ids) for ids in encode(tokenizer, texts))
    encode_seconds = time.perf_counter() - started
    print(f"\nbyte-level BPE: vocab 8,192 trained on {megabytes:.1f} MiB in {train_seconds:.1f} s; "
          f"encode_batch {tokens / encode_seconds:,.0f} tokens/s ({megabytes * 2**20 / tokens:.2f} bytes/token)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=50_000)
    parser.add_argument("--datatrove-python", help="a Python interpreter with datatrove installed")
    args = parser.parse_args()
    source = SyntheticSource.model_validate(SOURCE | {"num_documents": args.documents})
    documents = [generated.document for generated in generate(source)]
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        write_examples(directory, seed=7)
        bench_filters(documents[:min(len(documents), 5000)], directory)
        bench_minhash(documents, MinHashSpec(threshold=0.8))
        bench_stages(documents, directory, args.datatrove_python)
        bench_tokenizer(documents[:min(len(documents), 20000)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
