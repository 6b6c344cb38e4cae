"""The tokenize stage's wall time vs a direct `tokenizers` BPE training call on the same text.

    .venv/bin/python benchmarks/tokenize_speed.py [--documents 20000] [--vocab 8192] [--runs 3]

The corpus is generated (specc's synthetic prose source, seeded) and written by the data stage
(no filters, exact dedup only), so the tokenize stage reads what it reads in a pipeline. The
stage trains on every training document (`sample_documents` = all), so the direct call
(`train_bpe` on the same texts, the same merges) does the same training; the stage adds reading,
the compression report and encoding every document into shards. Prints the median of `--runs`
of each, the ratio, and the stage's encoding tokens/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specc.runtime.data import stage as data_stage  # noqa: E402
from specc.runtime.tokenizer import stage as tokenize_stage  # noqa: E402
from specc.runtime.tokenizer.bpe import train_bpe  # noqa: E402
from specc.spec.data import CorpusSpec  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|pad|>"]


def corpus(documents: int) -> dict:
    return {"sources": [{"type": "synthetic", "name": "prose", "num_documents": documents, "seed": 4}],
            "validation_fraction": 0.01, "seed": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory) / "run"
        data_stage.run({"stage": "data", "run_dir": str(run_dir), "params": {
            "corpus": corpus(args.documents), "filters": [], "dedup": {"exact": True, "num_workers": 1},
            "spec_dir": directory, "part_documents": 5000}})
        files = tokenize_stage.read_manifest(run_dir / "data")
        spec = CorpusSpec.model_validate(corpus(args.documents))
        sample, _ = tokenize_stage.sample_texts(run_dir / "data", files, spec, 10 ** 9)
        megabytes = sum(len(t.encode()) for t in sample) / 1e6
        params = {"tokenizer": {"vocab_size": args.vocab, "sample_documents": 10 ** 9, "compare_vocab_sizes": [],
                                "special_tokens": SPECIAL},
                  "corpus": corpus(args.documents), "model_vocab_size": args.vocab}
        stage_times, direct_times, rates = [], [], []
        for _ in range(args.runs):
            shutil.rmtree(run_dir / "tokenize", ignore_errors=True)
            started = time.perf_counter()
            tokenize_stage.run({"stage": "tokenize", "run_dir": str(run_dir), "params": params})
            stage_times.append(time.perf_counter() - started)
            rates.append(json.loads((run_dir / "tokenize" / "stats.json").read_text())["encode_tokens_per_s"])
            started = time.perf_counter()
            train_bpe(sample, args.vocab, SPECIAL, 2)
            direct_times.append(time.perf_counter() - started)
    stage, direct = statistics.median(stage_times), statistics.median(direct_times)
    print(f"{len(sample):,} training documents, {megabytes:.1f} MB (generated prose), vocabulary {args.vocab}")
    print(f"tokenize stage: {stage:.2f} s, direct train_bpe: {direct:.2f} s (medians of {args.runs}); "
          f"ratio {stage / direct:.2f}x; stage encoding {statistics.median(rates):,.0f} tokens/s")


if __name__ == "__main__":
    main()
