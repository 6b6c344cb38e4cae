"""Seeded mixture sampling: how many times each kept document enters the output.

With a target (tokens or documents), source s gets `weight_s * target`; a source smaller
than its share repeats in whole epochs and the remainder is a seeded sample without
replacement; a larger one is subsampled the same way. Without a target every kept
document appears once and the report shows the proportions that result.

Token counts here are estimates (UTF-8 bytes / 4, the usual bytes per token of a BPE
vocabulary on English text); the tokenize stage reports the real counts.
"""

from __future__ import annotations

import numpy as np

from specc.runtime.data.documents import DataError

BYTES_PER_TOKEN = 4.0


def _sample_counts(sizes: np.ndarray, want: float, rng: np.random.Generator) -> np.ndarray:
    """Repeat counts per document so that their summed `sizes` reach `want` (whole epochs, then a
    seeded prefix of a random permutation)."""
    counts = np.zeros(len(sizes), dtype=np.int64)
    total = float(sizes.sum())
    if total <= 0 or want <= 0:
        return counts
    epochs = int(want // total)
    counts += epochs
    remainder = want - epochs * total
    order = rng.permutation(len(sizes))
    cumulative = np.cumsum(sizes[order])
    take = int(np.searchsorted(cumulative, remainder, side="left"))
    if remainder > 0:
        take += 1
    counts[order[:min(take, len(sizes))]] += 1
    return counts


def sample(nbytes: dict[str, np.ndarray], weights: dict[str, float], target_tokens: int | None,
           target_documents: int | None, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Per source, the repeat count of each kept document; and the mixture report."""
    if target_tokens is not None and target_documents is not None:
        raise DataError("corpus: give target_tokens or target_documents, not both")
    counts: dict[str, np.ndarray] = {}
    for position, (name, sizes) in enumerate(nbytes.items()):
        rng = np.random.default_rng([seed, position])
        if target_tokens is not None:
            tokens = sizes / BYTES_PER_TOKEN
            counts[name] = _sample_counts(tokens, weights[name] * target_tokens, rng)
        elif target_documents is not None:
            counts[name] = _sample_counts(np.ones(len(sizes)), round(weights[name] * target_documents), rng)
        else:
            counts[name] = np.ones(len(sizes), dtype=np.int64)
    return counts, report(nbytes, weights, counts, target_tokens, target_documents)


def report(nbytes: dict[str, np.ndarray], weights: dict[str, float], counts: dict[str, np.ndarray],
           target_tokens: int | None, target_documents: int | None) -> dict:
    tokens = {name: float((nbytes[name] / BYTES_PER_TOKEN * counts[name]).sum()) for name in nbytes}
    documents = {name: int(counts[name].sum()) for name in nbytes}
    total_tokens = sum(tokens.values()) or 1.0
    sources = {}
    for name in nbytes:
        available = float(nbytes[name].sum() / BYTES_PER_TOKEN)
        sources[name] = {
            "requested_proportion": round(weights[name], 4),
            "achieved_proportion": round(tokens[name] / total_tokens, 4),
            "documents_available": len(nbytes[name]),
            "documents_out": documents[name],
            "estimated_tokens_out": round(tokens[name]),
            "epochs": round(tokens[name] / available, 3) if available else 0.0,
        }
    return {"target_tokens": target_tokens, "target_documents": target_documents,
            "proportions_by": "estimated tokens (UTF-8 bytes / 4)", "sources": sources}


def drift_warnings(report: dict, tolerance: float) -> list[str]:
    """A warning per source whose achieved share of estimated tokens differs from its requested share
    by more than `tolerance` (absolute, in share points: 0.05 is 5 points), saying what to change.

    Warned, not rebalanced: without a target, every kept document appears once, and matching
    the weights would mean dropping data of (or repeating) a source the user supplied; with a
    target the sampler already draws each source's share, so what remains is document
    granularity and the bytes-per-token estimate, which no resampling here can correct."""
    warnings = []
    for name, source in report["sources"].items():
        drift = source["achieved_proportion"] - source["requested_proportion"]
        source["drift"] = round(drift, 4)
        if abs(drift) > tolerance:
            fix = ("set corpus.target_tokens (or target_documents) to sample each source to its weight"
                   if report["target_tokens"] is None and report["target_documents"] is None else
                   "sampling takes whole documents, and this source's are large for its share of the target; "
                   "raise the target or the tolerance")
            warnings.append(f"source {name!r}: achieved {source['achieved_proportion']:.1%} of tokens, requested "
                            f"{source['requested_proportion']:.1%} ({drift * 100:+.1f} points, more than the "
                            f"{tolerance * 100:g}-point corpus.mixture_tolerance); {fix}")
    return warnings
