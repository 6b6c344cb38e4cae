"""Score a data-stage run against the ground truth of its synthetic sources.

Used by the tests and `benchmarks/data_quality.py`: filter precision and recall on planted
junk, and dedup recall on planted exact and near duplicates (near ones split by their
true Jaccard similarity against the configured threshold) and precision of removals.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from specc.runtime.data.dedup import shingles


def kept_ids(stage_dir: Path, source: str) -> set[str]:
    """Ids of a source's documents that passed the filters (before dedup)."""
    ids: set[str] = set()
    for path in sorted((stage_dir / "parts" / source).glob("*.npz")):
        with np.load(path) as archive:
            ids.update(str(i) for i in archive["ids"])
    return ids


def removed_duplicates(stage_dir: Path) -> dict[str, dict]:
    with gzip.open(stage_dir / "dedup" / "removed.jsonl.gz", "rt") as stream:
        records = [json.loads(line) for line in stream]
    return {record["id"]: record for record in records}


def jaccard(a: str, b: str, n: int) -> float:
    x, y = shingles(a, n), shingles(b, n)
    return len(x & y) / max(len(x | y), 1)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score_filters(documents: list, kept: set[str]) -> dict:
    """Junk is the positive class: recall = junk dropped / junk; precision = junk among dropped."""
    dropped = [d for d in documents if d.id not in kept]
    junk = [d for d in documents if d.meta["kind"] == "junk"]
    junk_dropped = sum(1 for d in dropped if d.meta["kind"] == "junk")
    by_type: dict[str, list[int]] = {}
    for d in junk:
        counts = by_type.setdefault(d.meta["junk_type"], [0, 0])
        counts[0] += d.id not in kept
        counts[1] += 1
    return {"junk": len(junk), "dropped": len(dropped), "junk_dropped": junk_dropped,
            "recall": _ratio(junk_dropped, len(junk)), "precision": _ratio(junk_dropped, len(dropped)),
            "clean_dropped": len(dropped) - junk_dropped,
            "recall_by_type": {t: _ratio(c[0], c[1]) for t, c in sorted(by_type.items())}}


def score_dedup(documents: list, kept: set[str], removed: dict[str, dict], ngram: int, threshold: float) -> dict:
    """A planted duplicate counts as found when it was removed as a duplicate of its original
    or of another copy of the same original (one cluster)."""
    by_id = {d.id: d for d in documents}
    cluster = {d.id: d.meta.get("original", d.id) for d in documents}
    found = {"exact_dup": [0, 0], "near_above": [0, 0], "near_below": [0, 0]}
    for d in documents:
        kind = d.meta["kind"]
        if kind not in ("exact_dup", "near_dup") or d.id not in kept or d.meta["original"] not in kept:
            continue
        if kind == "near_dup":
            similar = jaccard(d.text, by_id[d.meta["original"]].text, ngram) >= threshold
            kind = "near_above" if similar else "near_below"
        hit = d.id in removed and cluster.get(removed[d.id]["duplicate_of"]["id"]) == d.meta["original"]
        found[kind][0] += hit
        found[kind][1] += 1
    in_source = [r for i, r in removed.items() if i in by_id]
    correct = sum(1 for r in in_source if cluster[r["id"]] == cluster.get(r["duplicate_of"]["id"])
                  and by_id[r["id"]].meta["kind"] in ("exact_dup", "near_dup", "clean"))
    return {
        "exact_recall": _ratio(*found["exact_dup"]), "exact_planted": found["exact_dup"][1],
        "near_recall_above_threshold": _ratio(*found["near_above"]), "near_above_planted": found["near_above"][1],
        "near_recall_below_threshold": _ratio(*found["near_below"]), "near_below_planted": found["near_below"][1],
        "removed": len(in_source), "precision": _ratio(correct, len(in_source)),
        "false_positives": len(in_source) - correct,
    }
