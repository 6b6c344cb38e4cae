"""Spec section `eval`: perplexity sets and benchmark tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from specc.spec.base import SpecModel
from specc.spec.types import Identifier, PositiveCount, PositiveLength


class PerplexitySet(SpecModel):
    """Held-out text scored by perplexity."""

    name: Identifier
    path: str = Field(min_length=1)
    """Glob of jsonl/text files."""
    text_field: str = "text"
    max_documents: PositiveCount | None = None


TaskType = Literal["multiple_choice", "generative", "hellaswag", "mmlu", "arc", "gsm8k"]


class EvalTask(SpecModel):
    """A benchmark task from local jsonl."""

    name: Identifier
    type: TaskType
    """The task's format (docs/evaltasks.md lists each one's jsonl fields). `hellaswag`, `mmlu`, `arc`
    (multiple choice: acc, acc_norm) and `gsm8k` (generation: exact match) read the benchmark's own
    Hugging Face field layout and prompt as lm-evaluation-harness's task of that name;
    `multiple_choice`: `{question, choices, answer}` prompted `Question: ...\nAnswer:`;
    `generative`: `{question, answer}` scored by exact match or `answer_pattern` (built-in backend only)."""
    path: str = Field(min_length=1)
    """Glob of the jsonl files scored."""
    fewshot_path: str | None = Field(default=None, min_length=1)
    """Glob of the jsonl files few-shot examples come from (MMLU's dev split, ARC's or GSM8K's train
    split); default: the scored files themselves, never the item being scored."""
    num_fewshot: Annotated[int, Field(ge=0, le=64)] | None = None
    """Examples in the prompt; default `eval.num_fewshot`."""
    answer_pattern: str | None = None
    """For generative tasks: a regex whose first group is the answer (e.g. GSM8K's `#### (\\-?[0-9.,]+)`)."""
    max_new_tokens: PositiveLength = 64
    """Tokens generated per answer (generative tasks); below `model.max_seq_len`, whose rest holds the prompt."""
    limit: PositiveCount | None = None
    """Score at most this many examples."""


LmEvalTaskName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")]


class LmEvalTasks(SpecModel):
    """Your own lm-evaluation-harness task YAMLs, run by lm-eval itself (`eval.backend: lm_eval`),
    on local data only (docs/evaltasks.md, "Your own lm-eval tasks")."""

    include_path: str = Field(min_length=1)
    """Directory of lm-eval task YAMLs, searched recursively as lm-eval's `--include_path` (relative
    to the spec's directory). Relative data paths in the YAMLs (`dataset_kwargs.data_files`, a
    local `dataset_path` directory) are read relative to this directory."""
    tasks: list[LmEvalTaskName] = Field(min_length=1)
    """Task, group or tag names defined in those YAMLs (`task:`, `group:`, `tag:`)."""
    num_fewshot: Annotated[int, Field(ge=0, le=64)] | None = None
    """Examples in the prompt; default: each task's own `num_fewshot` (not `eval.num_fewshot`)."""
    limit: PositiveCount | None = None
    """Score at most this many documents per task."""


class EvalSpec(SpecModel):
    """Evaluation after training (and after each alignment stage)."""

    backend: Literal["builtin", "lm_eval"] = "builtin"
    """`builtin`: specc's harness; `lm_eval`: lm-evaluation-harness (the `eval` extra) on the same
    model, tokenizer and files. Both build the same prompts and agree within standard error."""
    perplexity: list[PerplexitySet] = []
    tasks: list[EvalTask] = []
    num_fewshot: Annotated[int, Field(ge=0, le=64)] = 0
    """Default few-shot k."""
    batch_size: PositiveCount = 8
    lm_eval: LmEvalTasks | None = None
    """Your own lm-eval task YAMLs (needs `backend: lm_eval`), scored after `tasks`."""
