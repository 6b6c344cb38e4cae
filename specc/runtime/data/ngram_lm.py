"""An interpolated Kneser-Ney word n-gram language model for the perplexity filter.

Perplexity under a model of reference text (CCNet, Wenzek et al. 2020, uses a KenLM
5-gram on Wikipedia) separates prose like the reference from junk. This is written for
the purpose, pure Python and small enough for reference sets of a few million words:

    P(w | h) = max(c(h w) - D, 0) / c(h) + D * N1+(h .) / c(h) * P(w | h')

with raw counts at the highest order and continuation counts N1+(. h w) below it
(Kneser & Ney 1995; interpolated form of Chen & Goodman 1998, eq. 17), a discount per
order D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), and at the bottom the unigram
interpolated with a uniform distribution over the vocabulary plus one unknown word.
A sentence starts with one `<s>`; n-grams that begin with it keep raw counts at every order
(nothing can precede them), as KenLM's lmplz adjusts counts (Heafield et al. 2013).

specc fits the counts here and scores with KenLM (`kenlm`, C++): `save_arpa` writes the model
in ARPA form, whose backoff semantics reproduce the interpolation exactly (the listed
probability of a seen n-gram is the interpolated one; an unseen one backs off with weight
gamma(h) = D N1+(h .) / c(h)), so KenLM's scores equal `perplexity` below, which stays as the
reference the tests compare against. A user's own KenLM model (ARPA or binary) loads the same way.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from specc.runtime.data.documents import DataError
from specc.runtime.data.model_file import LazyModelFile

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
            sequence = [BOS] + tokens + [EOS]
            for i in range(1, len(sequence)):
                gram = tuple(sequence[max(0, i - self.order + 1):i + 1])
                self.counts[len(gram)][gram] += 1  # shorter only when it starts with <s>: a raw count
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
        return self._probability(word, history[max(0, len(history) - self.order + 1):] if self.order > 1 else (), self.order)

    def _probability(self, word: str, history: tuple[str, ...], k: int) -> float:
        history = history[max(0, len(history) - (k - 1)):] if k > 1 else ()
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
        """The pure-Python score (the reference for KenLMScorer; ~50k words/s)."""
        tokens = [t if t in self.vocabulary else UNK for t in tokenize(text)[:MAX_TOKENS]] + [EOS]
        history = (BOS,)
        log_sum = 0.0
        for token in tokens:
            log_sum += math.log(self._probability(token, history, self.order))
            if self.order > 1:
                history = (history + (token,))[-(self.order - 1):]
        return math.exp(-log_sum / len(tokens))

    def arpa_lines(self) -> Iterator[str]:
        """The model in ARPA form (log10 probabilities and backoff weights)."""
        grams = {k: dict.fromkeys(self.counts[k]) for k in range(1, self.order + 1)}
        grams[1].update(dict.fromkeys([(UNK,), (BOS,)]))
        for k in range(1, self.order):  # every context must be listed to carry its backoff weight
            grams[k].update(dict.fromkeys(self.context_total[k + 1]))
        written = max(self.order, 2)  # KenLM reads bigram models and up: a unigram model gets no 2-grams
        grams.setdefault(2, {})
        yield "\\data\\"
        for k in range(1, written + 1):
            yield f"ngram {k}={len(grams[k])}"
        for k in range(1, written + 1):
            yield ""
            yield f"\\{k}-grams:"
            for gram in sorted(grams[k]):
                seen = gram[-1] != BOS
                logp = math.log10(self._probability(gram[-1], gram[:-1], k)) if seen else -99.0
                line = f"{logp:.7f}\t{' '.join(gram)}"
                if k < self.order and gram in self.context_total[k + 1]:
                    gamma = self.discount[k + 1] * self.context_types[k + 1][gram] / self.context_total[k + 1][gram]
                    line += f"\t{math.log10(gamma):.7f}"
                yield line
        yield ""
        yield "\\end\\"

    def save_arpa(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "w") as stream:
            for line in self.arpa_lines():
                stream.write(line + "\n")
        temporary.replace(path)
        return path


class KenLMScorer(LazyModelFile):
    """Perplexity under a KenLM model (ARPA or KenLM binary), with specc's tokenization (lowercase
    words and punctuation), so a model `KneserNeyLM.save_arpa` wrote scores as `perplexity` does.
    Pickles as its path (the data stage sends filters to worker processes)."""

    def _load(self):
        import kenlm

        try:
            config = kenlm.Config()
            config.show_progress = False
            config.arpa_complain = kenlm.ARPALoadComplain.NONE
            return kenlm.Model(str(self.path), config)
        except (OSError, RuntimeError) as error:
            raise DataError(f"{self.path}: cannot load a KenLM model (ARPA or binary): {error}") from None

    def perplexity(self, text: str) -> float:
        tokens = tokenize(text)[:MAX_TOKENS]
        log10_sum = self._loaded().score(" ".join(tokens), bos=True, eos=True)
        return 10.0 ** (-log10_sum / (len(tokens) + 1))
