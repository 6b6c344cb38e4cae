"""Spec section `eval`: perplexity sets and benchmark tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Identifier, PositiveCount, PositiveLength


class PerplexitySet(SpecModel):
    """Held-out text scored by perplexity."""

    name: Identifier
    path: str = Field(min_length=1)
    """Glob of jsonl/text files."""
    text_field: str = "text"
    max_documents: PositiveCount | None = None


class EvalTask(SpecModel):
    """A benchmark task from local jsonl."""

    name: Identifier
    type: Literal["multiple_choice", "generative"]
    """`multiple_choice`: `{question, choices, answer}` scored by log-likelihood; `generative`: `{question, answer}` scored by exact match or regex."""
    path: str = Field(min_length=1)
    num_fewshot: Annotated[int, Field(ge=0, le=64)] | None = None
    """Examples in the prompt; default `eval.num_fewshot`."""
    answer_pattern: str | None = None
    """For generative tasks: a regex whose first group is the answer (e.g. GSM8K's `#### (\\-?[0-9.,]+)`)."""
    max_new_tokens: PositiveLength = 64
    """Tokens generated per answer (generative tasks); below `model.max_seq_len`, whose rest holds the prompt."""
    limit: PositiveCount | None = None
    """Score at most this many examples."""


class EvalSpec(SpecModel):
    """Evaluation after training (and after each alignment stage)."""

    perplexity: list[PerplexitySet] = []
    tasks: list[EvalTask] = []
    num_fewshot: Annotated[int, Field(ge=0, le=64)] = 0
    """Default few-shot k."""
    batch_size: PositiveCount = 8
