"""The filter chain: spec filters built into callables, applied in spec order.

Each built filter has a `name` (shown in reports), the `sources` it applies to (None: all)
and `check(document) -> reason | None`. A document is dropped by the first filter that
gives a reason. Filters that need a model build it once here (a classifier trained from
example globs, a Kneser-Ney model fitted on reference text, loaded into KenLM) and are then pickled to the
worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specc.runtime.data import heuristics, langid, linear
from specc.runtime.data.documents import DataError, Document
from specc.runtime.data.ngram_lm import KenLMScorer, KneserNeyLM
from specc.runtime.data.rules import Rules
from specc.runtime.data.sources import iter_files, resolve_glob
from specc.spec.data import (
    ClassifierFilter, FileSource, LanguageFilter, LengthFilter, PerplexityFilter, RepetitionFilter, RulesFilter,
    SymbolFilter, WordLengthFilter,
)

HEURISTICS = {
    LengthFilter: heuristics.check_length,
    WordLengthFilter: heuristics.check_word_length,
    SymbolFilter: heuristics.check_symbols,
    RepetitionFilter: heuristics.check_repetition,
}


@dataclass
class BuiltFilter:
    name: str
    spec: object
    sources: frozenset[str] | None
    model: object = None
    """A language identifier, LinearModel, KenLMScorer or Rules, depending on the filter type."""

    def applies_to(self, document: Document) -> bool:
        return self.sources is None or document.source in self.sources

    def check(self, document: Document) -> str | None:
        spec = self.spec
        if type(spec) in HEURISTICS:
            return HEURISTICS[type(spec)](spec, document.text)
        if isinstance(spec, LanguageFilter):
            return self._check_language(document)
        if isinstance(spec, ClassifierFilter):
            return "low_quality_score" if self.model.score(document.text, "positive") < spec.threshold else None
        if isinstance(spec, PerplexityFilter):
            perplexity = self.model.perplexity(document.text)
            if perplexity > spec.max_perplexity:
                return "perplexity_high"
            return "perplexity_low" if perplexity < spec.min_perplexity else None
        return self.model.check(document)

    def _check_language(self, document: Document) -> str | None:
        spec: LanguageFilter = self.spec
        language, score = self.model.predict(document.text)
        document.language = language  # the report counts what later filters drop per language
        if language not in spec.languages:
            return f"language_{language}"
        if score < spec.thresholds.get(language, spec.min_score):
            return f"low_confidence_{language}"
        return None


def _example_texts(pattern: str, spec_dir: Path) -> list[str]:
    return [document.text for document in iter_files(FileSource(name="examples", path=pattern), spec_dir)]


def _resolve_model(path: str, spec_dir: Path, what: str) -> Path:
    return resolve_glob(path, spec_dir, what)[0]


def _build_classifier(spec: ClassifierFilter, name: str, spec_dir: Path, models_dir: Path) -> linear.LinearModel:
    if spec.model_path is not None:
        model = linear.load(_resolve_model(spec.model_path, spec_dir, f"filter {name!r} model_path"))
        if "positive" not in model.labels:
            raise DataError(f"filter {name!r}: the model's labels {model.labels} have no 'positive' label")
        return model
    if spec.positive is None or spec.negative is None:
        raise DataError(f"filter {name!r}: give `model_path`, or both `positive` and `negative` example globs")
    good, bad = _example_texts(spec.positive, spec_dir), _example_texts(spec.negative, spec_dir)
    model = linear.train(good + bad, ["positive"] * len(good) + ["negative"] * len(bad))
    model.save(models_dir / f"{name}.npz")
    return model


def _build_language_identifier(spec: LanguageFilter, name: str, spec_dir: Path):
    """The packaged lid.176 by default; a `model_path` ending in `.npz` is specc's linear
    classifier, any other a fastText model. Languages the model cannot report fail here,
    before any document is read (validate checks the packaged model's: R126)."""
    if spec.model_path is None:
        return langid.packaged_identifier()
    path = _resolve_model(spec.model_path, spec_dir, f"filter {name!r} model_path")
    if path.suffix == ".npz":
        return linear.load(path)
    labels = langid.model_labels(path)
    unknown = [language for language in spec.languages if language not in labels]
    if unknown:
        raise DataError(f"filter {name!r}: the fastText model {path} has no label(s) {unknown}; "
                        f"its labels include {sorted(labels)[:12]}")
    return langid.FastTextIdentifier(path)


def _build_perplexity_model(spec: PerplexityFilter, name: str, spec_dir: Path, models_dir: Path) -> KenLMScorer:
    """KenLM scores either way: the user's model, or specc's Kneser-Ney fit of the reference text
    written as ARPA (same scores as the pure-Python model, 35-45x faster on English prose). Loaded here, so a bad
    model file fails before any document is read."""
    if (spec.model_path is None) == (spec.reference is None):
        raise DataError(f"filter {name!r}: give exactly one of `model_path` and `reference` (validate: R230)")
    if spec.model_path is not None:
        scorer = KenLMScorer(_resolve_model(spec.model_path, spec_dir, f"filter {name!r} model_path"))
    else:
        texts = (document.text for document in
                 iter_files(FileSource(name="reference", path=spec.reference), spec_dir))
        scorer = KenLMScorer(KneserNeyLM(spec.order).fit(texts).save_arpa(models_dir / f"{name}.arpa"))
    scorer.perplexity("")
    return scorer


def _build_model(spec, name: str, spec_dir: Path, models_dir: Path):
    if isinstance(spec, LanguageFilter):
        return _build_language_identifier(spec, name, spec_dir)
    if isinstance(spec, ClassifierFilter):
        return _build_classifier(spec, name, spec_dir, models_dir)
    if isinstance(spec, PerplexityFilter):
        return _build_perplexity_model(spec, name, spec_dir, models_dir)
    if isinstance(spec, RulesFilter):
        return Rules(spec)
    return None


def filter_name(spec, position: int) -> str:
    """The spec's `name`, else `<type>-<position>` counting from 1."""
    return spec.name or f"{spec.type}-{position}"


def build_filters(specs: list, spec_dir: Path, models_dir: Path) -> list[BuiltFilter]:
    built = []
    for position, spec in enumerate(specs, start=1):
        name = filter_name(spec, position)
        sources = frozenset(spec.sources) if spec.sources is not None else None
        built.append(BuiltFilter(name, spec, sources, _build_model(spec, name, spec_dir, models_dir)))
    return built


def first_drop(filters: list[BuiltFilter], document: Document) -> tuple[str, str] | None:
    """(filter name, reason) of the first filter that drops the document, or None to keep it."""
    for built in filters:
        if built.applies_to(document):
            reason = built.check(document)
            if reason is not None:
                return built.name, reason
    return None
