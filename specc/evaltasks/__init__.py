"""The local task library: benchmark formats that both evaluation backends read the same way.

Torch-free (validate imports it). A format turns one jsonl row, in the field layout of the
benchmark's own Hugging Face dataset, into an lm-evaluation-harness document: `query` (the
prompt of this item), `choices` and `gold` (multiple choice) or `target` (generation), and
`description` (text before the first example). The rest of the prompt recipe (target
delimiter, few-shot separator, few-shot sampler, stop strings, answer filters, metrics) is the
format's `Recipe`, copied from the task configs that lm-evaluation-harness 0.4.13 ships
(`lm_eval/tasks/<task>/...yaml`; each format cites its file). The built-in harness interprets
that recipe (`specc.runtime.evaluate.prompts`); the lm_eval backend writes it out as a task YAML
whose `process_docs` calls the same `process` function, so both backends see identical
documents and differ only in the code that assembles, scores and filters them.

Field layouts and what to point a task at: docs/evaltasks.md. Tiny fixtures (made up, not
copied from any benchmark): `specc/evaltasks/fixtures/<format>.jsonl`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
"""lm_eval/tasks/gsm8k/gsm8k.yaml: exact_match's regexes_to_ignore (with ignore_case: true)."""


class FormatError(ValueError):
    """A row lacks a field the format needs, or has it with the wrong shape."""


@dataclass(frozen=True)
class AnswerFilter:
    """lm-eval's `regex` filter then `take_first` (lm_eval/filters/extraction.py, RegexFilter)."""

    name: str
    pattern: str
    group_select: int = 0
    fallback: str = "[invalid]"


@dataclass(frozen=True)
class Recipe:
    """How documents become prompts and scores (the fields of an lm-eval TaskConfig)."""

    output_type: str
    """`multiple_choice` (log-likelihood of each choice) or `generate_until` (greedy generation)."""
    metrics: tuple[str, ...]
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    sampler: str = "default"
    """`default`: random draws seeded once per task (lm_eval/api/samplers.py ContextSampler);
    `first_n`: the first k of the few-shot pool, in order (MMLU's canonical dev examples)."""
    until: tuple[str, ...] = ()
    """Generation stops at the first of these strings (and at the end-of-document token)."""
    filters: tuple[AnswerFilter, ...] = ()
    ignore_case: bool = False
    regexes_to_ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    """One task format of the library."""

    name: str
    fields: dict[str, str]
    """Required jsonl field -> what it holds (documentation and validate's check)."""
    process: Callable[[dict], dict]
    """Row -> lm-eval document; raises FormatError on a malformed row."""
    recipe: Recipe
    source: str
    """The lm-evaluation-harness task config the format follows."""
    optional: dict[str, str] = field(default_factory=dict)


def _need(row: dict, key: str, kind: type | tuple[type, ...]):
    if key not in row:
        raise FormatError(f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FormatError(f"field {key!r} should be {names}, not {type(value).__name__}")
    return value


def _strings(row: dict, key: str) -> list[str]:
    values = _need(row, key, list)
    if not values or not all(isinstance(v, str) for v in values):
        raise FormatError(f"field {key!r} should be a non-empty list of strings")
    return values


def _index(answer: int | str, choices: list[str], key: str) -> int:
    """An answer given as an index, a letter (A = 0) or the text of a choice."""
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha() and 0 <= ord(answer.upper()) - 65 < len(choices):
        return ord(answer.upper()) - 65
    if isinstance(answer, str) and answer.isdigit() and 0 <= int(answer) < len(choices):
        return int(answer)
    if isinstance(answer, str) and answer in choices:
        return choices.index(answer)
    raise FormatError(f"field {key!r} = {answer!r} is not an index, letter or text of one of {len(choices)} choices")


def hellaswag_preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py `preprocess` (WikiHow bracket artefacts removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag(row: dict) -> dict:
    """lm_eval/tasks/hellaswag/utils.py `process_docs`."""
    endings = _strings(row, "endings")
    ctx = _need(row, "ctx_a", str) + " " + _need(row, "ctx_b", str).capitalize()
    label = _need(row, "label", (int, str))
    return {"query": hellaswag_preprocess(_need(row, "activity_label", str) + ": " + ctx),
            "choices": [hellaswag_preprocess(e) for e in endings], "gold": _index(label, endings, "label"),
            "description": ""}


def mmlu(row: dict) -> dict:
    """lm_eval/tasks/mmlu/default/_default_template_yaml (`doc_to_text`, letters as choices) and
    its per-subject `description`; any number of choices gets letters A, B, C, ..."""
    choices = _strings(row, "choices")
    letters = [chr(65 + i) for i in range(len(choices))]
    lines = [_need(row, "question", str).strip()] + [f"{letter}. {choice}" for letter, choice in zip(letters, choices)]
    subject = row.get("subject")
    description = (f"The following are multiple choice questions (with answers) about "
                   f"{' '.join(str(subject).split('_'))}.\n\n" if subject else "")
    return {"query": "\n".join(lines) + "\nAnswer:", "choices": letters,
            "gold": _index(_need(row, "answer", (int, str)), choices, "answer"), "description": description}


def arc(row: dict) -> dict:
    """lm_eval/tasks/arc/arc_easy.yaml (ARC-Challenge uses the same template)."""
    choices = _need(row, "choices", dict)
    texts, labels = choices.get("text"), choices.get("label")
    if not (isinstance(texts, list) and isinstance(labels, list) and len(texts) == len(labels) and texts
            and all(isinstance(t, str) for t in texts + labels)):
        raise FormatError("field 'choices' should be {\"text\": [...], \"label\": [...]} (equal-length string lists)")
    key = _need(row, "answerKey", str)
    if key not in labels:
        raise FormatError(f"field 'answerKey' = {key!r} is not one of the labels {labels}")
    return {"query": f"Question: {_need(row, 'question', str)}\nAnswer:", "choices": list(texts),
            "gold": labels.index(key), "description": ""}


def gsm8k(row: dict) -> dict:
    """lm_eval/tasks/gsm8k/gsm8k.yaml: the reference is the whole solution ending `#### <number>`."""
    return {"query": f"Question: {_need(row, 'question', str)}\nAnswer:", "target": _need(row, "answer", str),
            "description": ""}


def question_answer_choice(row: dict) -> dict:
    """specc's own multiple-choice layout, prompted like ARC: `Question: ...\\nAnswer:` + ` <choice>`."""
    choices = [str(c) for c in _need(row, "choices", list)]
    if not choices:
        raise FormatError("field 'choices' is empty")
    return {"query": f"Question: {_need(row, 'question', (str, int, float))}\nAnswer:", "choices": choices,
            "gold": _index(_need(row, "answer", (int, str)), choices, "answer"), "description": ""}


MC_METRICS = ("acc", "acc_norm")
FORMATS: dict[str, Format] = {
    "hellaswag": Format(
        "hellaswag", {"activity_label": "string", "ctx_a": "string", "ctx_b": "string",
                      "endings": "list of strings (the choices)", "label": "index of the right ending (int or digit string)"},
        hellaswag, Recipe("multiple_choice", MC_METRICS), "lm_eval/tasks/hellaswag/hellaswag.yaml"),
    "mmlu": Format(
        "mmlu", {"question": "string", "choices": "list of strings", "answer": "index (0 = A) or letter of the right choice"},
        mmlu, Recipe("multiple_choice", ("acc",), sampler="first_n"), "lm_eval/tasks/mmlu/default/_default_template_yaml",
        optional={"subject": "e.g. abstract_algebra: the prompt opens with `The following are multiple choice "
                             "questions (with answers) about abstract algebra.`"}),
    "arc": Format(
        "arc", {"question": "string", "choices": "{\"text\": [strings], \"label\": [strings]}",
                "answerKey": "the label of the right choice"},
        arc, Recipe("multiple_choice", MC_METRICS), "lm_eval/tasks/arc/arc_easy.yaml"),
    "gsm8k": Format(
        "gsm8k", {"question": "string", "answer": "the worked solution, ending `#### <number>`"},
        gsm8k, Recipe("generate_until", ("exact_match",), until=("Question:", "</s>", "<|im_end|>"),
                      filters=(AnswerFilter("strict-match", "#### (\\-?[0-9\\.\\,]+)"),
                               AnswerFilter("flexible-extract", "(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)),
                      ignore_case=True, regexes_to_ignore=GSM8K_IGNORE),
        "lm_eval/tasks/gsm8k/gsm8k.yaml"),
    "multiple_choice": Format(
        "multiple_choice", {"question": "string", "choices": "list", "answer": "index, letter or text of the right choice"},
        question_answer_choice, Recipe("multiple_choice", MC_METRICS), "lm_eval/tasks/arc/arc_easy.yaml (template)"),
}
"""Formats by `eval.tasks[].type`. (`generative`, specc's regex-scored generation, is not a
library format: it runs on the built-in backend only, R290.)"""


def generates(task_type: str) -> bool:
    """Whether a task of this `type` generates text (and so needs `max_new_tokens` of room)."""
    return task_type == "generative" or (task_type in FORMATS and FORMATS[task_type].recipe.output_type == "generate_until")


def read_rows(path: Path, limit: int | None = None) -> list[tuple[int, dict]]:
    """(line number, object) of a jsonl file's first `limit` non-blank lines."""
    rows: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise FormatError(f"{path}:{number}: not valid JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise FormatError(f"{path}:{number}: a line should be a JSON object")
            rows.append((number, row))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def load_documents(paths: list[Path], format_name: str) -> list[dict]:
    """Every row of the files as lm-eval documents; the first malformed row raises FormatError
    naming its file and line."""
    process = FORMATS[format_name].process
    documents = []
    for path in paths:
        for number, row in read_rows(path):
            try:
                documents.append(process(row))
            except FormatError as error:
                raise FormatError(f"{path}:{number}: {error}") from None
    return documents
