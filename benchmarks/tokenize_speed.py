"""The tokenize stage's cost vs a direct `tokenizers` BPE training call on the same text.

    .venv/bin/python benchmarks/tokenize_speed.py [--source prose|stdlib|GLOB] [--documents 20000]
                                                  [--vocab 8192] [--runs 3]

The corpus is generated prose (specc's synthetic source, seeded; `--documents`), the Python
standard library's own files (`stdlib`: real text, code and docstrings with some non-ASCII,
present on every machine), or the text files of a glob (one document per file); the data stage
writes it (no filters, exact dedup only), so the tokenize stage reads what it reads in a pipeline. The
stage trains on every training document (`sample_documents` = all), so the direct call
(`train_bpe` on the same texts, the same merges: checked) does the same training; the stage adds
reading, the compression report and encoding every document into shards.

Runs alternate stage and direct call (a shared machine's load then hits both alike) and print
medians of `--runs`: wall seconds, and CPU seconds of all the process's threads (steadier when
other jobs share the cores); the stage's phases from its metrics.jsonl timestamps; and the shard
encoders alone on the same texts (tiktoken as the stage runs it vs `tokenizers`' batch encoder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specc.runtime.data import stage as data_stage  # noqa: E402
from specc.runtime.data.documents import read_documents  # noqa: E402
from specc.runtime.tokenizer import stage as tokenize_stage  # noqa: E402
from specc.runtime.tokenizer.bpe import Encoder, encode, load_tokenizer, train_bpe  # noqa: E402
from specc.spec.data import CorpusSpec  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|pad|>"]


def corpus(source: str, documents: int) -> dict:
    if source == "prose":
        spec = {"type": "synthetic", "name": "prose", "num_documents": documents, "seed": 4}
    elif source == "stdlib":
        spec = {"type": "python_stdlib", "name": "stdlib"}
    else:
        spec = {"type": "files", "name": "files", "path": source, "format": "text"}
    return {"sources": [spec], "validation_fraction": 0.01, "seed": 2}


def timed(function) -> tuple[float, float, object]:
    """Wall and CPU seconds (all threads of this process, rayon's and tiktoken's included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def phases(metrics: Path, total: float) -> dict[str, float]:
    """Seconds per stage phase, from the `time` of its metrics.jsonl records."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    at = {r["phase"]: r["time"] for r in records if r["event"] == "phase"}
    trained = next(r["time"] for r in records if r["event"] == "tokenizer")
    last_part = max(r["time"] for r in records if r["event"] == "part")
    return {"reading the sample": at["training tokenizer"] - at["sampling"],
            "training": trained - at["training tokenizer"],
            "compression report": at["encoding"] - trained,
            "encoding + shards": last_part - at["encoding"],
            "rest (setup, meta, success marker)": total - (last_part - at["sampling"])}


def median_row(rows: list[dict]) -> dict:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="prose", help="prose, stdlib or a glob of text files")
    parser.add_argument("--documents", type=int, default=20000, help="documents of generated prose")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory) / "run"
        data_stage.run({"stage": "data", "run_dir": str(run_dir), "params": {
            "corpus": corpus(args.source, args.documents), "filters": [], "dedup": {"exact": True, "num_workers": 1},
            "spec_dir": directory, "part_documents": 5000}})
        files = tokenize_stage.read_manifest(run_dir / "data")
        spec = CorpusSpec.model_validate(corpus(args.source, args.documents))
        sample, _ = tokenize_stage.sample_texts(run_dir / "data", files, spec, 10 ** 9)
        megabytes = sum(len(t.encode()) for t in sample) / 1e6
        params = {"tokenizer": {"vocab_size": args.vocab, "sample_documents": 10 ** 9, "compare_vocab_sizes": [],
                                "special_tokens": SPECIAL},
                  "corpus": corpus(args.source, args.documents), "model_vocab_size": args.vocab}
        stage_rows, direct_rows, phase_rows = [], [], []
        for _ in range(args.runs):
            shutil.rmtree(run_dir / "tokenize", ignore_errors=True)
            wall, cpu, _ = timed(lambda: tokenize_stage.run({"stage": "tokenize", "run_dir": str(run_dir),
                                                               "params": params}))
            stage_rows.append({"wall": wall, "cpu": cpu})
            phase_rows.append(phases(run_dir / "tokenize" / "metrics.jsonl", wall))
            wall, cpu, direct = timed(lambda: train_bpe(sample, args.vocab, SPECIAL, 2))
            direct_rows.append({"wall": wall, "cpu": cpu})
        stats = json.loads((run_dir / "tokenize" / "stats.json").read_text())
        tokenizer = load_tokenizer(run_dir / "tokenize" / "tokenizer.json", SPECIAL)
        same_merges = json.loads(tokenizer.to_str())["model"]["merges"] == json.loads(direct.to_str())["model"]["merges"]
        texts = [d.text for entry in files for d in read_documents(run_dir / "data" / entry["file"])]
        encoder = Encoder(tokenizer, threads=cores)
        fast_rows, reference_rows = [], []
        for _ in range(args.runs):
            wall, cpu, _ = timed(lambda: encoder.encode(texts))
            fast_rows.append({"wall": wall, "cpu": cpu})
            wall, cpu, _ = timed(lambda: encode(tokenizer, texts))
            reference_rows.append({"wall": wall, "cpu": cpu})
    stage, direct, phase = median_row(stage_rows), median_row(direct_rows), median_row(phase_rows)
    fast, reference = median_row(fast_rows), median_row(reference_rows)
    tokens = stats["train_tokens"] + stats["validation_tokens"]
    print(f"{len(sample):,} training documents, {megabytes:.1f} MB ({args.source}), vocabulary {args.vocab} "
          f"({stats['vocab_size']} reached), {tokens:,} tokens; {cores} core(s) available, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset (rayon on all cores)')}, "
          f"shard encoder {stats['encoder']['name']} on {stats['encoder']['threads']} thread(s); "
          f"same merges as the direct call: {same_merges}; load average {os.getloadavg()[0]:.1f}")
    print(f"medians of {args.runs} alternating runs:")
    print(f"  tokenize stage     {stage['wall']:6.2f} s wall {stage['cpu']:6.2f} s CPU")
    print(f"  direct train_bpe   {direct['wall']:6.2f} s wall {direct['cpu']:6.2f} s CPU")
    print(f"  ratio              {stage['wall'] / direct['wall']:6.2f}x wall {stage['cpu'] / direct['cpu']:6.2f}x CPU")
    print("stage phases (wall, medians):")
    for name, seconds in phase.items():
        print(f"  {name:36s} {seconds:6.2f} s")
    print(f"shard encoders alone on all {len(texts):,} documents (medians):")
    print(f"  tiktoken (stage)   {fast['wall']:6.2f} s wall {fast['cpu']:6.2f} s CPU "
          f"{tokens / fast['wall']:12,.0f} tokens/s")
    print(f"  tokenizers batch   {reference['wall']:6.2f} s wall {reference['cpu']:6.2f} s CPU "
          f"{tokens / reference['wall']:12,.0f} tokens/s")


if __name__ == "__main__":
    main()
