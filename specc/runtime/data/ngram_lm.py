"""An interpolated Kneser-Ney word n-gram language model for the perplexity filter.

Perplexity under a model of reference text (CCNet, Wenzek et al. 2020, uses a KenLM
5-gram on Wikipedia) separates prose like the reference from junk. This is written for
the purpose, pure Python and small enough for reference sets of a few million words:

    P(w | h) = max(c(h w) - D, 0) / c(h) + D * N1+(h .) / c(h) * P(w | h')

with raw counts at the highest order and continuation counts N1+(. h w) below it
(Kneser & Ney 1995; interpolated form of Chen & Goodman 1998, eq. 17), a discount per
order D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), and at the bottom the unigram
interpolated with a uniform distribution over the vocabulary plus one unknown word.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MAX_TOKENS = 100_000
"""Tokens of a document scored (the start is representative; bounds the cost of huge files)."""


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class KneserNeyLM:
    def __init__(self, order: int):
        if order < 1:
            raise ValueError("order must be at least 1")
        self.order = order
        self.counts: list[Counter] = [Counter() for _ in range(order + 1)]
        """counts[k][ngram]: raw count at k == order, continuation count below."""
        self.context_total: list[dict] = [{} for _ in range(order + 1)]
        self.context_types: list[dict] = [{} for _ in range(order + 1)]
        self.discount = [0.75] * (order + 1)
        self.vocabulary: set[str] = set()

    def fit(self, texts: Iterable[str]) -> KneserNeyLM:
        top = self.counts[self.order]
        for text in texts:
            tokens = tokenize(text)
            self.vocabulary.update(tokens)
            sequence = [BOS] * (self.order - 1) + tokens + [EOS]
            for i in range(self.order - 1, len(sequence)):
                top[tuple(sequence[i - self.order + 1:i + 1])] += 1
        self.vocabulary.add(EOS)
        for k in range(self.order - 1, 0, -1):
            for gram in self.counts[k + 1]:
                self.counts[k][gram[1:]] += 1
        for k in range(1, self.order + 1):
            self._context_statistics(k)
        return self

    def _context_statistics(self, k: int) -> None:
        total: dict = defaultdict(int)
        types: dict = defaultdict(int)
        histogram = Counter()
        for gram, count in self.counts[k].items():
            total[gram[:-1]] += count
            types[gram[:-1]] += 1
            if count <= 2:
                histogram[count] += 1
        self.context_total[k], self.context_types[k] = dict(total), dict(types)
        n1, n2 = histogram[1], histogram[2]
        if n1 and n2:
            self.discount[k] = n1 / (n1 + 2 * n2)

    def probability(self, word: str, history: tuple[str, ...]) -> float:
        """P(word | the last order-1 words of history)."""
        return self._probability(word, history[len(history) - self.order + 1:] if self.order > 1 else (), self.order)

    def _probability(self, word: str, history: tuple[str, ...], k: int) -> float:
        history = history[len(history) - (k - 1):] if k > 1 else ()
        total = self.context_total[k].get(history, 0)
        if k == 1:
            uniform = 1.0 / (len(self.vocabulary) + 1)
            if total == 0:
                return uniform
            discount = self.discount[1]
            kept = max(self.counts[1].get((word,), 0) - discount, 0.0)
            return (kept + discount * self.context_types[1][()] * uniform) / total
        lower = self._probability(word, history, k - 1)
        if total == 0:
            return lower
        discount = self.discount[k]
        kept = max(self.counts[k].get(history + (word,), 0) - discount, 0.0)
        return (kept + discount * self.context_types[k][history] * lower) / total

    def perplexity(self, text: str) -> float:
        tokens = [t if t in self.vocabulary else UNK for t in tokenize(text)[:MAX_TOKENS]] + [EOS]
        history = (BOS,) * (self.order - 1)
        log_sum = 0.0
        for token in tokens:
            log_sum += math.log(self._probability(token, history, self.order))
            if self.order > 1:
                history = history[1:] + (token,)
        return math.exp(-log_sum / len(tokens))
