"""Alignment data rows in the formats TRL documents, from jsonl, parquet, Arrow or `save_to_disk` data.

A stage's `data`/`prompts` is any data path `specc.runtime.data.formats` reads. Its rows are
matched against the layouts of the stage's kind, first match wins (TRL, "Dataset formats and
types": https://huggingface.co/docs/trl/dataset_formats):

- sft:        `messages` (conversational language modeling); `prompt` + `completion`
              (prompt-completion, strings or message lists); `prompt` + `response` (specc's own);
              `text` (language modeling: the loss covers every token)
- preference: `prompt` + `chosen` + `rejected` (explicit prompt); `chosen` + `rejected`
              (implicit prompt: the shared leading messages, or the shared leading words of two
              strings, as TRL's `extract_prompt`); each value a string or a message list
- prompt:     `prompt` (prompt-only, a string or a message list)

A stage's `fields` maps these names to the data's own columns (`{messages: conversations}`).
The pre-flight checks the first file's schema against the same layouts (`layout_problem`).
No torch here: `specc validate` imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from specc.integrity import StageError
from specc.runtime.data.documents import DataError
from specc.runtime.data.formats import (MESSAGES, STRING, TABLE_KINDS, detect_kind, iter_records, resolve_glob,
                                        value_type)

LAYOUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sft": (("messages",), ("prompt", "completion"), ("prompt", "response"), ("text",)),
    "preference": (("prompt", "chosen", "rejected"), ("chosen", "rejected")),
    "prompt": (("prompt",),),
}
TYPES = {"messages": (MESSAGES,), "text": (STRING,)}
"""Value types a field may hold; fields not named take a string or a message list."""
STAGE_KINDS = {"sft": "sft", "dpo": "preference", "reward_model": "preference", "ppo": "prompt"}
FIELDS_HINT = "map your columns with the stage's `fields`, e.g. `fields: {messages: conversations}`"


class AlignmentDataError(DataError, StageError):
    """Bad alignment data found at run time: one line naming the file and row (the stage runner prints
    StageErrors without a traceback), and still a DataError for the readers' callers."""


def data_files(raw: str, base: Path, what: str) -> list[tuple[Path, str]]:
    """(file, format) of every record file behind a data path; an error for text files."""
    files = []
    for path in resolve_glob(raw, base, what):
        kind = detect_kind(path)
        if kind not in TABLE_KINDS:
            raise DataError(f"{what}: {path.name} is neither jsonl, parquet nor .arrow")
        files.append((path, kind))
    return files


def layout_problem(fields: dict[str, str], kind: str, rename: dict[str, str]) -> tuple[tuple[str, ...] | None, str | None]:
    """(the layout these columns fit, None) or (None, why not); `fields` as `formats.read_schema` gives them."""
    column = {name: rename.get(name, name) for layout in LAYOUTS[kind] for name in layout}
    present = {key: found for key, found in fields.items() if found != "null"}
    layout = next((lay for lay in LAYOUTS[kind] if all(column[n] in present for n in lay)), None)
    if layout is None:
        # `_rows` drops null values before choosing a layout: a column null in every record read
        # fits no layout there, so it is named here rather than passed
        nulls = next((lay for lay in LAYOUTS[kind] if all(column[n] in fields for n in lay)), None)
        if nulls is not None:
            empty = ", ".join(repr(column[n]) for n in nulls if fields[column[n]] == "null")
            return None, f"column {empty} is null in every record read; the stage needs a value in each row"
        wanted = " or ".join("+".join(f"`{column[n]}`" for n in lay) for lay in LAYOUTS[kind])
        return None, f"no {kind} layout fits the columns ({', '.join(sorted(fields)) or 'none'}): needs {wanted}"
    for name in layout:
        allowed = TYPES.get(name, (STRING, MESSAGES))
        found = fields[column[name]]
        if found not in allowed:
            shown = " or ".join("a string" if a == STRING else "a list of {role, content} messages" for a in allowed)
            return None, f"column {column[name]!r} is {found}, expected {shown}"
    return layout, None


def read_rows(raw: str | os.PathLike, kind: str, rename: dict[str, str] | None = None) -> Iterator[dict]:
    """Rows normalised to the layout's names: `prompt` as a message list, `messages` a message list,
    `chosen`/`rejected`/`completion` a string or message list, `text` a string."""
    try:
        yield from _rows(str(raw), kind, rename or {})
    except AlignmentDataError:
        raise
    except DataError as error:
        raise AlignmentDataError(str(error)) from None


def _rows(raw: str, kind: str, rename: dict[str, str]) -> Iterator[dict]:
    for path, file_kind in data_files(raw, Path(os.getcwd()), raw):
        for where, record in iter_records(path, file_kind, str(path)):
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
            types = {key: value_type(value) for key, value in record.items() if value is not None}
            layout, problem = layout_problem(types, kind, rename)
            if problem:
                raise DataError(f"{where}: {problem}; {FIELDS_HINT}")
            yield _normalise({name: record[rename.get(name, name)] for name in layout}, where)


def _normalise(row: dict, where: str) -> dict:
    if "chosen" in row and "prompt" not in row:
        row = extract_prompt(row, where)
    for key in ("messages", "prompt"):
        if key in row:
            row[key] = _messages(row[key], "user", where)
    if "response" in row:
        row["completion"] = row.pop("response")
    return row


def _messages(value, role: str, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    messages = []
    for message in value:
        if not isinstance(message.get("content"), str) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: a message needs a string `role` and `content`, found {message!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def extract_prompt(row: dict, where: str) -> dict:
    """The implicit prompt of a preference row: the longest shared start of `chosen` and `rejected`
    (whole messages, or characters with a separating space left to the completions), as TRL's
    `trl.data_utils.extract_prompt`."""
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise DataError(f"{where}: `chosen` and `rejected` must both be strings or both message lists")
    index = 0
    while index < min(len(chosen), len(rejected)) and chosen[index] == rejected[index]:
        index += 1
    if isinstance(chosen, str) and index > 0 and chosen[index - 1] == " ":
        index -= 1
    if index == 0:
        raise DataError(f"{where}: `chosen` and `rejected` share no prompt and the row has no `prompt`")
    return {"prompt": chosen[:index], "chosen": chosen[index:], "rejected": rejected[index:]}
