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

The words reach KenLM without a Python object per word (`kenlm_sentence`: str and bytes methods
over the whole document), and a document is scored by one `score` call (`KenLMScorer.perplexity`).
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
"""specc's words: runs of word characters and single other non-space characters, of lowercased text."""
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MAX_TOKENS = 100_000
"""Tokens of a document scored (the start is representative; bounds the cost of huge files)."""


def tokenize(text: str) -> list[str]:
    """The definition of specc's words (the Kneser-Ney fit and the reference score use it;
    KenLM's route gets the same words from `kenlm_sentence`)."""
    return TOKEN.findall(text.lower())


_KENLM_SPACES = b" \t\n\r\x0b\x0c"
"""What KenLM's Python module splits a sentence on (`bytes.split()`: ASCII whitespace only)."""
_KENLM_NUL = b"\xc0\x80"
"""The NUL word as specc gives it to KenLM, which does not find a word holding a NUL byte (an ARPA
file listing b"\\x00" scored it as another word); NUL's overlong form, which no UTF-8 encoder
writes (Java's "modified UTF-8")."""
_OWN_WORD = re.compile(r"[^\w\s]")
"""A character that is a word by itself (TOKEN's second branch)."""
_ASCII_REPLACEMENTS = tuple(
    (ord(c), c.encode(), b" " + (_KENLM_NUL if c == "\x00" else c.encode()) + b" " if _OWN_WORD.match(c) else b" ")
    for c in map(chr, range(128)) if _OWN_WORD.match(c) or (c.isspace() and c.encode() not in _KENLM_SPACES))
"""(byte, itself, replacement): an ASCII character that is a word by itself (punctuation, a
control character) padded with spaces; \x1c-\x1f, whitespace to `re` but not to KenLM, a space."""
_NON_ASCII_SEPARATOR = re.compile(r"[^\x00-\x7f\w]")
"""A non-ASCII character that is not a word character: a word by itself, or whitespace."""
_SPACE_MASK = bytes.maketrans(bytes(range(256)), bytes(32 if b in _KENLM_SPACES else 120 for b in range(256)))
"""Maps KenLM's separators to b" " and every other byte to b"x", so b" x" marks where a word starts."""
_PIECE_BYTES = 8192
"""KenLM's `score` sums a sentence in single precision (kenlm.pyx: `cdef float total`): on 100,000
words of prose the perplexity drifts 4e-5 from the double sum, 5e-3 on repetitive text. A longer
sentence is scored in pieces of about this many bytes (about 1,400 English words), summed in double."""


def _kenlm_bytes(text: str) -> bytes:
    """Text (a word, a line of an ARPA file) as KenLM reads it: UTF-8, lone surrogates passed
    through (JSON allows "\\ud83d"), NUL as _KENLM_NUL."""
    return text.encode(errors="surrogatepass").replace(b"\x00", _KENLM_NUL)


def _pad_non_ascii(match: re.Match) -> str:
    character = match.group()
    return " " if character.isspace() else f" {character} "


def kenlm_sentence(text: str) -> tuple[bytes, int]:
    """`tokenize(text)[:MAX_TOKENS]` as KenLM reads it (UTF-8, separated by ASCII whitespace) and
    the number of words, with no Python object per word: lowercase; pad the (rarer) non-ASCII
    punctuation and turn non-ASCII whitespace into spaces with one regex pass, only when the text
    is not ASCII; encode (UTF-8 bytes of a non-ASCII character are all >= 0x80, so ASCII bytes are
    ASCII characters); pad each ASCII punctuation byte present with `bytes.replace` (a C pass per
    byte value; on bytes, as `in` and `replace` on a non-ASCII str compare every character); count
    word starts on a byte mask. The tests compare the words with `tokenize` on adversarial text."""
    spaced = text.lower()
    if not spaced.isascii():
        spaced = _NON_ASCII_SEPARATOR.sub(_pad_non_ascii, spaced)
    sentence = spaced.encode(errors="surrogatepass")  # NUL, padded as punctuation, becomes _KENLM_NUL below
    for byte, character, replacement in _ASCII_REPLACEMENTS:
        if byte in sentence:  # an int: memchr (a bytes operand would go through a slower path)
            sentence = sentence.replace(character, replacement)
    masked = sentence.translate(_SPACE_MASK)
    count = masked.count(b" x") + masked.startswith(b"x")
    if count > MAX_TOKENS:
        return b" ".join(sentence.split()[:MAX_TOKENS]), MAX_TOKENS
    return sentence, count


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
        """The pure-Python score: the reference the tests hold KenLMScorer to, never the filter's
        (no fallback: `kenlm` is a dependency; this is 14-45x slower, benchmarks/perplexity_speed.py)."""
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
        with open(temporary, "wb") as stream:
            for line in self.arpa_lines():
                stream.write(_kenlm_bytes(line + "\n"))
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
        """A document is one sentence, scored by one `score` call (the per-word loop in KenLM's
        compiled module) unless longer than _PIECE_BYTES. CCNet's `DocLM` and datatrove's
        `KenlmModel` call `score` once per line and sum; specc's Kneser-Ney model treats a document
        as one sentence, so scoring per line would change the scores."""
        sentence, count = kenlm_sentence(text)
        model = self._loaded()
        if len(sentence) <= _PIECE_BYTES:
            return 10.0 ** (-model.score(sentence, bos=True, eos=True) / (count + 1))
        return 10.0 ** (-self._log10_probability_in_pieces(sentence) / (count + 1))

    def _log10_probability_in_pieces(self, sentence: bytes, piece_bytes: int = _PIECE_BYTES) -> float:
        """`score(sentence)` summed in double: each piece after the first is scored after the
        `order` words before it, whose score is subtracted. An n-gram model's probability of a word
        depends on the order - 1 words before it only, and KenLM's state after them is the same
        from the sentence's start or from a null context, so the pieces add up to the sentence."""
        model = self._loaded()
        starts = _piece_starts(sentence.translate(_SPACE_MASK), model.order, piece_bytes)
        ends = [start for _, start in starts] + [len(sentence)]
        total = model.score(sentence[:ends[0]], bos=True, eos=len(starts) == 0)
        for (context, start), end in zip(starts, ends[1:]):
            last = end == len(sentence)
            total += (model.score(sentence[context:end], bos=False, eos=last)
                      - model.score(sentence[context:start], bos=False, eos=False))
        return total


def _piece_starts(masked: bytes, context_words: int, piece_bytes: int) -> list[tuple[int, int]]:
    """(context start, piece start) byte offsets of the pieces after the first: a piece starts
    at the first word start at least `piece_bytes` after the previous one, where `context_words`
    words and at least one more precede it (so `<s>` is out of its context); the context starts at
    the first of those words. `masked` is the sentence under _SPACE_MASK (b"x" a word byte)."""
    starts = []
    position = piece_bytes
    while (start := masked.find(b" x", position) + 1) > 0:
        context = start
        for _ in range(context_words):
            context = _previous_word_start(masked, context)
            if context < 0:
                break
        if context >= 0 and _previous_word_start(masked, context) >= 0:
            starts.append((context, start))
        position = start + piece_bytes
    return starts


def _previous_word_start(masked: bytes, start: int) -> int:
    """Where the word before offset `start` begins, -1 when none."""
    last = masked.rfind(b"x", 0, start)
    return -1 if last < 0 else masked.rfind(b" x", 0, last + 1) + 1
