"""Heuristic quality rules: length, mean word length, symbols and Gopher repetition.

The rules and their default thresholds are those of the Gopher data pipeline (Rae et al.
2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
Appendix A.1.1 and Table A1); words are whitespace-separated tokens as there.
Each check returns a short drop reason (a stable code) or None to keep the document.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from specc.spec.data import LengthFilter, RepetitionFilter, SymbolFilter, WordLengthFilter

BULLETS = ("•", "●", "○", "◦", "▪", "‣", "⁃", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def check_length(spec: LengthFilter, text: str) -> str | None:
    chars = len(text)
    if chars < spec.min_chars:
        return "too_few_chars"
    if spec.max_chars is not None and chars > spec.max_chars:
        return "too_many_chars"
    if spec.min_words or spec.max_words is not None:
        words = len(text.split())
        if words < spec.min_words:
            return "too_few_words"
        if spec.max_words is not None and words > spec.max_words:
            return "too_many_words"
    return None


def check_word_length(spec: WordLengthFilter, text: str) -> str | None:
    words = text.split()
    if not words:
        return "no_words"
    mean = sum(len(word) for word in words) / len(words)
    if mean < spec.min_mean:
        return "mean_word_length_low"
    if mean > spec.max_mean:
        return "mean_word_length_high"
    return None


def check_symbols(spec: SymbolFilter, text: str) -> str | None:
    """Gopher: hash or ellipsis to word ratio <= 0.1; >= 80% of words contain a letter;
    <= 90% of lines start with a bullet; <= 30% of lines end with an ellipsis."""
    words = text.split()
    if not words:
        return "no_words"
    symbols = text.count("#") + sum(text.count(ellipsis) for ellipsis in ELLIPSES)
    if symbols / len(words) > spec.max_symbol_to_word:
        return "symbol_to_word_ratio"
    alpha_words = sum(1 for word in words if any(ch.isalpha() for ch in word))
    if alpha_words / len(words) < spec.min_alpha_word_fraction:
        return "few_alphabetic_words"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        if sum(line.startswith(BULLETS) for line in lines) / len(lines) > spec.max_bullet_line_fraction:
            return "bullet_lines"
        if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > spec.max_ellipsis_line_fraction:
            return "ellipsis_lines"
    return None


def duplicate_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier item, fraction of their characters)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    duplicates = duplicate_chars = 0
    for item in items:
        if item in seen:
            duplicates += 1
            duplicate_chars += len(item)
        else:
            seen.add(item)
    total_chars = sum(len(item) for item in items)
    return duplicates / len(items), duplicate_chars / max(total_chars, 1)


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n))))


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram (if it occurs more than once)
    over all word characters."""
    if len(words) < n:
        return 0.0
    gram, count = Counter(_ngrams(words, n)).most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(word) for word in gram) * count / max(sum(map(len, words)), 1)


def duplicated_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters of words inside n-grams that occur more than once (each word counted once)
    over all word characters."""
    if len(words) < n:
        return 0.0
    grams = _ngrams(words, n)
    counts = Counter(grams)
    starts = np.fromiter((counts[gram] > 1 for gram in grams), dtype=np.int64, count=len(grams))
    if not starts.any():
        return 0.0
    # word j is covered when a duplicated n-gram starts anywhere in [j - n + 1, j]
    covered = np.convolve(starts, np.ones(n, dtype=np.int64))[:len(words)] > 0
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    return float(lengths[covered].sum() / max(lengths.sum(), 1))


def check_repetition(spec: RepetitionFilter, text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line_fraction, line_chars = duplicate_fractions(lines)
    if line_fraction > spec.max_duplicate_line_fraction:
        return "duplicate_lines"
    if line_chars > spec.max_duplicate_line_char_fraction:
        return "duplicate_line_chars"
    paragraphs = [p.strip() for p in PARAGRAPH_BREAK.split(text) if p.strip()]
    paragraph_fraction, paragraph_chars = duplicate_fractions(paragraphs)
    if paragraph_fraction > spec.max_duplicate_paragraph_fraction:
        return "duplicate_paragraphs"
    if paragraph_chars > spec.max_duplicate_paragraph_char_fraction:
        return "duplicate_paragraph_chars"
    words = text.split()
    for n, limit in sorted(spec.max_top_ngram_char_fraction.items()):
        if top_ngram_char_fraction(words, n) > limit:
            return f"top_{n}gram"
    for n, limit in sorted(spec.max_duplicate_ngram_char_fraction.items()):
        if duplicated_ngram_char_fraction(words, n) > limit:
            return f"duplicated_{n}grams"
    return None
