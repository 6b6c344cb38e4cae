"""Rules about the data stage that mirror what its runtime (`specc.runtime.data`) would refuse or
silently do differently: bounds that keep nothing, filters without a model, patterns that do not
compile, languages the packaged identifier never reports, two mixture targets."""

from __future__ import annotations

import re
from collections.abc import Iterator

from specc.diagnostics.rules.base import Finding
from specc.runtime.data.langid import known_languages
from specc.spec.root import Spec

_BOUNDS = {
    "length": (("min_chars", "max_chars"), ("min_words", "max_words")),
    "word_length": (("min_mean", "max_mean"),),
    "perplexity": (("min_perplexity", "max_perplexity"),),
}


def filter_bounds_are_ordered(spec: Spec) -> Iterator[Finding]:
    """A filter's lower bound may not exceed its upper bound: no document could pass, and the
    data stage would drop the whole corpus.

    passes: `{type: length, min_words: 50, max_words: 100000}`
    fails:  `{type: length, min_words: 500, max_words: 100}`
    """
    for index, item in enumerate(spec.filters):
        for low_name, high_name in _BOUNDS.get(item.type, ()):
            low, high = getattr(item, low_name), getattr(item, high_name)
            if high is not None and low > high:
                yield Finding(("filters", index, low_name),
                              f"{low_name} ({low:g}) exceeds {high_name} ({high:g}): the filter would drop every document",
                              f"lower {low_name} or raise {high_name}")


def classifier_has_a_model(spec: Spec) -> Iterator[Finding]:
    """A classifier filter scores with `model_path`, or trains specc's linear classifier from
    both `positive` and `negative` example globs (the data stage refuses anything else).

    passes: `{type: classifier, positive: good/*.txt, negative: bad/*.txt}`
    fails:  `{type: classifier, positive: good/*.txt}`
    """
    for index, item in enumerate(spec.filters):
        if item.type != "classifier" or item.model_path is not None:
            continue
        if item.positive is None or item.negative is None:
            missing = "negative" if item.positive is not None else "positive" if item.negative is not None else None
            yield Finding(("filters", index),
                          f"the classifier filter needs `model_path`, or both `positive` and `negative` example globs"
                          + (f" (`{missing}` is missing)" if missing else ""),
                          "give `model_path: quality.npz`, or `positive: good/*.jsonl` and `negative: bad/*.jsonl`")


def filter_patterns_compile(spec: Spec) -> Iterator[Finding]:
    """Every regular expression of a rules filter compiles (Python `re` syntax), as the data
    stage compiles them before reading a document.

    passes: `block_url_patterns: ['/tag/\\d+']`     fails: `block_patterns: ['(unclosed']`
    """
    for index, item in enumerate(spec.filters):
        if item.type != "rules":
            continue
        for field in ("block_url_patterns", "block_patterns"):
            for position, pattern in enumerate(getattr(item, field)):
                problem = regex_problem(pattern)
                if problem:
                    yield Finding(("filters", index, field, position), f"{pattern!r} is not a valid regular expression: {problem}",
                                  "use Python `re` syntax; escape literal brackets and dots with `\\`")


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` does not compile with Python's `re`, or None."""
    try:
        re.compile(pattern)
    except re.error as error:
        return str(error)
    return None


LID176_SPELLINGS = {
    "nb": "Norwegian Bokmål `no` (and Nynorsk `nn`): list `no`, and `nn` to keep Nynorsk too",
    "iw": "Hebrew `he` (ISO 639-1 since 1989)", "in": "Indonesian `id` (ISO 639-1 since 1989)",
    "ji": "Yiddish `yi` (ISO 639-1 since 1989)", "fil": "Filipino/Tagalog `tl`",
}
"""Codes users write for a language that lid.176 labels otherwise (its labels: Wikipedia's language
editions, where Norwegian Bokmål is `no`)."""


def languages_are_identifiable(spec: Spec) -> Iterator[Finding]:
    """Without a `model_path`, the language filter uses the packaged lid.176 model, which reports
    only its 176 labels (ISO 639-1 where one exists); a document in any other language (or a code
    spelled otherwise) is reported as something else and dropped, so listing it would silently
    keep nothing of it.

    passes: `{type: language, languages: [en, sw]}`     fails: `{type: language, languages: [eng]}`
    """
    known = known_languages()
    for index, item in enumerate(spec.filters):
        if item.type != "language" or item.model_path is not None:
            continue
        for position, language in enumerate(item.languages):
            if language not in known:
                spelled = LID176_SPELLINGS.get(language)
                yield Finding(("filters", index, "languages", position),
                              f"the packaged language identifier (lid.176) cannot report `{language}`; its documents would all be dropped",
                              f"lid.176 labels {spelled}" if spelled else
                              "lid.176 uses ISO 639-1 codes where one exists (`en`, `sw`, `zh`, `no`), else Wikipedia's "
                              "(`als`, `yue`); or give `model_path` (a fastText model with its own labels)")
        for language in item.thresholds:
            if language not in item.languages:
                yield Finding(("filters", index, "thresholds", language),
                              f"threshold for `{language}`, which is not in `languages`, is never used",
                              f"add `{language}` to languages or remove the threshold", "warning")


def mixture_has_one_target(spec: Spec) -> Iterator[Finding]:
    """The mixture samples to a token target or to a document target, not both (the data
    stage refuses both).

    passes: `target_tokens: 2B`     fails: `target_tokens: 2B, target_documents: 1M`
    """
    corpus = spec.corpus
    if corpus is not None and corpus.target_tokens is not None and corpus.target_documents is not None:
        yield Finding(("corpus", "target_documents"), "give target_tokens or target_documents, not both",
                      "remove one of them")


def perplexity_filter_has_one_model(spec: Spec) -> Iterator[Finding]:
    """A perplexity filter scores with the user's KenLM model (`model_path`) or with one specc
    trains on `reference` text: exactly one of the two (the data stage refuses anything else).

    passes: `{type: perplexity, reference: wiki/*.txt, max_perplexity: 300}`
    fails:  `{type: perplexity, max_perplexity: 300}`
    """
    for index, item in enumerate(spec.filters):
        if item.type != "perplexity" or (item.model_path is None) != (item.reference is None):
            continue
        both = item.model_path is not None
        yield Finding(("filters", index, "model_path") if both else ("filters", index),
                      "the perplexity filter has both `model_path` and `reference`" if both else
                      "the perplexity filter needs a model: `model_path` or `reference`",
                      "keep `model_path: lm.arpa` (a KenLM ARPA or binary model) or `reference: wiki/*.txt` "
                      "(specc trains a Kneser-Ney model on it), not both" if both else
                      "give `model_path: lm.arpa` (a KenLM ARPA or binary model) or `reference: wiki/*.txt`")
