"""Task files for specc's `generative` type: jsonl loading, answer normalisation and k-shot
prompt building, plus the glob resolution every eval path uses (`task_files`).

The library formats (`multiple_choice`, `hellaswag`, `mmlu`, `arc`, `gsm8k`) are read by
`specc.evaltasks` and prompted by `specc.runtime.evaluate.prompts`, as lm-evaluation-harness does.
`load_examples` still reads the `{"question", "choices", "answer"}` layout for callers that want
`Example`s.

- generative: `{"question", "answer"}`; with an `answer_pattern` the reference and the generation
  are both reduced to the pattern's first group before comparing. Prompts: `Question: ...\\nAnswer:`,
  few-shot examples separated by a blank line, drawn from the same file (never the item being
  scored), deterministically per item.
"""

from __future__ import annotations

import glob
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

FEWSHOT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    """Generative: the reference answer text. Multiple choice: the right choice's text."""
    choices: tuple[str, ...] = ()
    label: int = -1
    """Multiple choice: index of the right choice."""


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON: {error.msg}") from None
    return rows


def _label(row: dict, path: Path, number: int) -> int:
    choices, answer = row["choices"], row["answer"]
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha() and ord(answer.upper()) - 65 < len(choices):
        return ord(answer.upper()) - 65
    if isinstance(answer, str) and answer in choices:
        return choices.index(answer)
    raise ValueError(f"{path}:{number}: answer {answer!r} is not an index, letter or text of one of "
                     f"{len(choices)} choices")


def load_examples(path: Path, task_type: str) -> list[Example]:
    """All examples of a task file, validated."""
    examples = []
    for number, row in enumerate(read_jsonl(path), 1):
        missing = [key for key in ("question", "answer") + (("choices",) if task_type == "multiple_choice" else ())
                   if key not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing {', '.join(missing)}")
        if task_type == "multiple_choice":
            choices = tuple(str(choice) for choice in row["choices"])
            label = _label(row, path, number)
            examples.append(Example(str(row["question"]), choices[label], choices, label))
        else:
            examples.append(Example(str(row["question"]), str(row["answer"])))
    return examples


def task_files(pattern: str, base: Path | None = None) -> list[Path]:
    """The files a task or perplexity `path` glob names (relative globs resolve against base)."""
    full = pattern if Path(pattern).is_absolute() or base is None else str(base / pattern)
    files = sorted(Path(p) for p in glob.glob(full))
    if not files:
        raise ValueError(f"no files match {full!r}")
    return files


def question_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def fewshot_prompt(examples: list[Example], index: int, k: int, seed: int = 1234) -> str:
    """k solved examples (never example `index` itself) then the question of example `index`."""
    others = [i for i in range(len(examples)) if i != index]
    shots = random.Random(seed * 1_000_003 + index).sample(others, min(k, len(others)))
    parts = [f"{question_prompt(examples[i].question)} {examples[i].answer}" for i in shots]
    parts.append(question_prompt(examples[index].question))
    return FEWSHOT_SEPARATOR.join(parts)


def normalise_answer(text: str) -> str:
    """Strip spaces, thousands separators and a trailing full stop (GSM8K answers: `1,000.`)."""
    return text.strip().replace(",", "").rstrip(".").strip()


def extract_answer(text: str, pattern: str | None) -> str | None:
    """The answer a generation gives: the pattern's first group (None if absent), or the first line."""
    if pattern is not None:
        match = re.search(pattern, text)
        if match is None:
            return None
        return normalise_answer(match.group(1) if match.groups() else match.group(0))
    return normalise_answer(text.strip().split("\n")[0])


def reference_answer(answer: str, pattern: str | None) -> str:
    """The reference reduced like a generation; a reference without the pattern is used whole."""
    extracted = extract_answer(answer, pattern)
    return extracted if extracted is not None else normalise_answer(answer)
