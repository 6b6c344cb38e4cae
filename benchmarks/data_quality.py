"""Precision and recall of specc's filters and dedup on a synthetic corpus with ground truth.

    .venv/bin/python benchmarks/data_quality.py [--documents 5000] [--json]

The corpus (specc.runtime.data.synthetic) plants junk of five kinds and exact and near
duplicates (5-20% of sentences edited). Filters: junk is the positive class (recall = junk
dropped / junk planted; precision = junk among dropped). Dedup: recall on planted exact
duplicates and on planted near duplicates whose true word 5-gram Jaccard is at least the
threshold (and, for information, below it); precision = removed documents that belong to
the cluster they were removed into.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specc.runtime.data.dedup import Signer, deduplicate, lsh_params, normalized_hash  # noqa: E402
from specc.runtime.data.filters import build_filters, first_drop  # noqa: E402
from specc.runtime.data.scoring import score_dedup, score_filters  # noqa: E402
from specc.runtime.data.synthetic import generate, join_paragraphs, junk_text, prose_sentences  # noqa: E402
from specc.spec.data import Filter, MinHashSpec, SyntheticSource  # noqa: E402

JUNK_TYPES = ["symbol_soup", "repeated_lines", "boilerplate", "foreign", "short"]


def corpus(documents: int, seed: int) -> list:
    source = SyntheticSource(type="synthetic", name="prose", num_documents=documents, seed=seed,
                             duplicate_fraction=0.2, junk_fraction=0.2)
    return [generated.document for generated in generate(source)]


def write_examples(directory: Path, seed: int) -> None:
    """Reference prose and good/bad examples, generated with other seeds than the corpus."""
    rng = random.Random(seed)
    for name, texts in {
        "reference": [join_paragraphs(prose_sentences(rng), rng) for _ in range(300)],
        "good": [join_paragraphs(prose_sentences(rng), rng) for _ in range(200)],
        "bad": [junk_text(JUNK_TYPES[i % 5], rng) for i in range(200)],
    }.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        for index, text in enumerate(texts):
            (directory / name / f"{index:04d}.txt").write_text(text)


FILTER_SETS = {
    "gopher (length+word_length+symbols+repetition)": [
        {"type": "length", "min_chars": 200}, {"type": "word_length"}, {"type": "symbols"}, {"type": "repetition"}],
    "language [en]": [{"type": "language", "languages": ["en"]}],
    "classifier (trained on 200+200 examples)": [{"type": "classifier", "positive": "good/*.txt",
                                                  "negative": "bad/*.txt", "threshold": 0.5}],
    "perplexity (3-gram KN, max 150)": [{"type": "perplexity", "reference": "reference/*.txt", "max_perplexity": 150}],
}


def filter_quality(documents: list, directory: Path) -> dict:
    results = {}
    adapter = TypeAdapter(list[Filter])
    for name, specs in FILTER_SETS.items():
        built = build_filters(adapter.validate_python(specs), directory, directory / "models")
        started = time.perf_counter()
        kept = {d.id for d in documents if first_drop(built, d) is None}
        seconds = time.perf_counter() - started
        results[name] = score_filters(documents, kept) | {"docs_per_s": round(len(documents) / seconds)}
    return results


def dedup_quality(documents: list) -> dict:
    results = {}
    hashes = np.array([normalized_hash(d.text) for d in documents], dtype=np.uint64)
    everyone = {d.id for d in documents}
    variants = [(f"threshold {t}", MinHashSpec(threshold=t)) for t in (0.7, 0.8, 0.9)]
    variants.append(("threshold 0.8, bands x rows = datasketch optimum 9x13", MinHashSpec(threshold=0.8, bands=9, rows=13)))
    for name, spec in variants:
        signatures = Signer(spec).signatures(d.text for d in documents)
        result = deduplicate(hashes, [signatures], True, spec)
        removed = {documents[i].id: {"id": documents[i].id, "duplicate_of": {"id": documents[j].id}}
                   for i, (j, _) in result.duplicate_of.items()}
        bands, rows = lsh_params(spec)
        results[name] = score_dedup(documents, everyone, removed, spec.ngram, spec.threshold) | {
            "bands": bands, "rows": rows}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    documents = corpus(args.documents, args.seed)
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        write_examples(directory, args.seed + 1000)
        filters = filter_quality(documents, directory)
    dedup = dedup_quality(documents)
    if args.json:
        print(json.dumps({"documents": len(documents), "filters": filters, "dedup": dedup}, indent=2))
        return 0
    print(f"synthetic corpus: {len(documents)} documents (20% planted duplicates, 20% planted junk)\n")
    print(f"{'filter':50s} {'recall':>7s} {'precision':>9s} {'clean dropped':>13s} {'docs/s':>8s}  recall by junk type")
    for name, s in filters.items():
        by_type = " ".join(f"{t}={r}" for t, r in s["recall_by_type"].items())
        print(f"{name:50s} {s['recall']:>7} {s['precision']:>9} {s['clean_dropped']:>13} {s['docs_per_s']:>8}  {by_type}")
    print(f"\n{'dedup (128 perms, word 5-grams)':55s} {'bands x rows':>12s} {'exact rec':>9s} {'near rec >=t':>12s} "
          f"{'near rec <t':>11s} {'precision':>9s} {'FPs':>4s}")
    for name, s in dedup.items():
        print(f"{name:55s} {s['bands']:>5} x {s['rows']:<4} {s['exact_recall']:>9} "
              f"{s['near_recall_above_threshold']:>8} ({s['near_above_planted']:>3}) "
              f"{s['near_recall_below_threshold']:>7} ({s['near_below_planted']:>3}) {s['precision']:>9} {s['false_positives']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
