"""A tiny linear text classifier specc trains itself (fastText-like, without embeddings).

Features are lowercased word unigrams and bigrams hashed (crc32, stable across processes,
unlike Python's `hash`) into `num_buckets` buckets, log-scaled and L2-normalised; the model
is multinomial logistic regression trained by seeded SGD. Used by the classifier filter
(labels "negative"/"positive") and, with language labels, by the language filter.

Saved as `.npz` with `labels`, `weights`, `bias` and `num_buckets`.
Train one from example globs: `python -m specc.runtime.data.linear -o model.npz en=a/*.txt de=b/*.txt`.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specc.runtime.data.documents import DataError

WORD = re.compile(r"\w+", re.UNICODE)
FORMAT = "specc-linear-v1"


def features(text: str, num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, values) of a text's hashed unigram and bigram features."""
    words = WORD.findall(text.lower()[:20000])
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    counts = Counter(zlib.crc32(gram.encode()) % num_buckets for gram in grams)
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    values = np.log1p(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
    return index, values / np.linalg.norm(values)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


@dataclass
class LinearModel:
    labels: list[str]
    weights: np.ndarray
    """[num_buckets, num_labels] float32."""
    bias: np.ndarray

    @property
    def num_buckets(self) -> int:
        return self.weights.shape[0]

    def probabilities(self, text: str) -> np.ndarray:
        index, values = features(text, self.num_buckets)
        return _softmax(values @ self.weights[index] + self.bias)

    def predict(self, text: str) -> tuple[str, float]:
        probabilities = self.probabilities(text)
        best = int(np.argmax(probabilities))
        return self.labels[best], float(probabilities[best])

    def score(self, text: str, label: str) -> float:
        return float(self.probabilities(text)[self.labels.index(label)])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp.npz")
        np.savez(temporary, format=np.array(FORMAT), labels=np.array(self.labels),
                 weights=self.weights, bias=self.bias)
        temporary.replace(path)


def load(path: Path) -> LinearModel:
    """Load a model saved by `LinearModel.save`; other formats get a clear error."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive.get("format", "")) != FORMAT:
                raise DataError(f"{path}: not a specc linear model (expected format {FORMAT})")
            return LinearModel([str(label) for label in archive["labels"]],
                               archive["weights"].astype(np.float32), archive["bias"].astype(np.float32))
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: cannot load a specc linear model (.npz written by specc): {error}") from None


def train(texts: list[str], labels: list[str], num_buckets: int = 2**18, epochs: int = 8,
          learning_rate: float = 0.5, l2: float = 1e-6, seed: int = 0) -> LinearModel:
    """Multinomial logistic regression by SGD over the examples in a seeded order."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"training a classifier needs examples of at least two labels, got {names}")
    targets = np.array([names.index(label) for label in labels])
    examples = [features(text, num_buckets) for text in texts]
    weights = np.zeros((num_buckets, len(names)), dtype=np.float32)
    bias = np.zeros(len(names), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        rate = learning_rate / (1 + epoch)
        for i in rng.permutation(len(examples)):
            index, values = examples[i]
            gradient = _softmax(values @ weights[index] + bias)
            gradient[targets[i]] -= 1.0
            weights[index] -= rate * (np.outer(values, gradient) + l2 * weights[index])
            bias -= rate * gradient
    return LinearModel(names, weights, bias)


def main(argv: list[str] | None = None) -> int:
    from specc.runtime.data.sources import iter_files
    from specc.spec.data import FileSource

    parser = argparse.ArgumentParser(prog="python -m specc.runtime.data.linear",
                                     description="Train specc's linear text classifier from example globs.")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("examples", nargs="+", help="LABEL=GLOB (text files, or jsonl with a `text` field)")
    args = parser.parse_args(argv)
    texts, labels = [], []
    try:
        for item in args.examples:
            label, _, pattern = item.partition("=")
            if not label or not pattern:
                raise DataError(f"expected LABEL=GLOB, got {item!r}")
            for document in iter_files(FileSource(name="examples", path=pattern), Path.cwd()):
                texts.append(document.text)
                labels.append(label)
        train(texts, labels).save(args.output)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(texts)} examples, labels {sorted(set(labels))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
