"""Per-document rates of the data and tokenize stages, written as the plan's calibration file.

    .venv/bin/python benchmarks/data_rates.py [--documents 4000] [--runs 3] [--write]

On a synthetic corpus (specc.runtime.data.synthetic, 10% duplicates, 10% junk), one process:
the heuristic filters (length, word_length, symbols, repetition) and MinHash signing per
document (the data stage's filter phase, per worker); the single-process MinHash dedup (docs/s
and the LSH index's bytes per indexed document, `dedup.index_report`); byte-level BPE training
(docs/s of the sample) and encoding (docs/s). Medians over --runs. `--write` stores them in
specc/plan/data_rates.json with the machine and date, where `specc plan` reads them
(specc.plan.data_stage). Rates depend on the machine and on document length: the file records both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specc.runtime.data.dedup import Signer, deduplicate  # noqa: E402
from specc.runtime.data.filters import build_filters  # noqa: E402
from specc.runtime.data.synthetic import generate  # noqa: E402
from specc.runtime.tokenizer.bpe import Encoder, train_bpe  # noqa: E402
from specc.spec.data import Filter, MinHashSpec, SyntheticSource  # noqa: E402

OUT = ROOT / "specc" / "plan" / "data_rates.json"
FILTERS = [{"type": "length", "min_chars": 200}, {"type": "word_length"}, {"type": "symbols"}, {"type": "repetition"}]


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(texts: list[str], documents: list, directory: Path) -> dict:
    filters = build_filters(TypeAdapter(list[Filter]).validate_python(FILTERS), directory, directory / "models")
    spec = MinHashSpec(threshold=0.8)
    signer = Signer(spec)
    figures = {}
    figures["filter_docs_per_s"] = len(documents) / timed(lambda: [f.check(d) for d in documents for f in filters])
    signatures = []
    figures["sign_docs_per_s"] = len(texts) / timed(lambda: signatures.append(signer.signatures(texts)))
    hashes = np.zeros(len(texts), dtype=np.uint64)
    outcome = []
    figures["dedup_docs_per_s"] = len(texts) / timed(lambda: outcome.append(deduplicate(hashes, [signatures[0]], False, spec)))
    report = outcome[0].lsh
    figures["dedup_index_bytes_per_doc"] = report["approx_bytes"] / max(report["indexed_documents"], 1)
    tokenizer = []
    figures["tokenizer_train_docs_per_s"] = len(texts) / timed(
        lambda: tokenizer.append(train_bpe(texts, 8192, ["<|endoftext|>", "<|pad|>"], 2)))
    encoder = Encoder(tokenizer[0], threads=len(os.sched_getaffinity(0)))  # the tokenize stage's encoder
    figures["tokenize_encode_docs_per_s"] = len(texts) / timed(lambda: encoder.encode(texts))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = parser.parse_args()
    source = SyntheticSource(type="synthetic", name="prose", num_documents=args.documents, seed=3,
                             duplicate_fraction=0.1, junk_fraction=0.1)
    documents = [generated.document for generated in generate(source)]
    texts = [d.text for d in documents]
    with tempfile.TemporaryDirectory() as scratch:
        runs = [measure(texts, documents, Path(scratch)) for _ in range(args.runs)]
    rates = {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}
    for key, value in rates.items():
        print(f"{key:<30} {value:>12,.1f}")
    calibration = {
        "rates": rates,
        "source": (f"benchmarks/data_rates.py --documents {args.documents} --runs {args.runs}: medians, one process, "
                   f"synthetic prose ({sum(map(len, texts)) / len(texts):,.0f} chars/doc avg), heuristic filters "
                   f"{[f['type'] for f in FILTERS]}, MinHash threshold 0.8 x 128 permutations, BPE vocab 8192"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
        "measured": datetime.date.today().isoformat(),
        "chars_per_document": round(sum(map(len, texts)) / len(texts)),
    }
    if args.write:
        OUT.write_text(json.dumps(calibration, indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
