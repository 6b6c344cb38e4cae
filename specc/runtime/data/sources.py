"""Source readers: each yields `Document`s one at a time (a corpus is never held in memory).

Files are visited in sorted path order and lines in file order, so the document order,
and every later decision that depends on it (which duplicate is kept), is deterministic.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

from specc.runtime.data.documents import DataError, Document
from specc.runtime.data.formats import (MESSAGES, STRING, detect_kind, display_name, iter_records, messages_text,
                                        read_schema, resolve_glob, value_type)
from specc.runtime.data.synthetic import generate
from specc.spec.data import FileSource, PythonStdlibSource, SyntheticSource


def iter_source(source, spec_dir: Path) -> Iterator[Document]:
    """Documents of one spec source, in a deterministic order."""
    if isinstance(source, PythonStdlibSource):
        return iter_python_stdlib(source)
    if isinstance(source, SyntheticSource):
        return (record.document for record in generate(source))
    return iter_files(source, spec_dir)


def source_files(source: FileSource, spec_dir: Path) -> list[tuple[Path, str]]:
    """(file, format) of every file a `files` source reads, in reading order."""
    return [(path, detect_kind(path) if source.format == "auto" else source.format)
            for path in resolve_glob(source.path, spec_dir, f"source {source.name!r}")]


def iter_files(source: FileSource, spec_dir: Path) -> Iterator[Document]:
    for path, kind in source_files(source, spec_dir):
        shown = display_name(path, spec_dir)
        if kind == "text":
            yield Document(source.name, shown, _read_text_file(path, shown))
            continue
        if kind in ("parquet", "arrow"):  # the schema says at once what every row would
            problem = schema_problem(read_schema(path, kind, shown), source)
            if problem:
                raise DataError(f"{shown}: {problem}")
        for number, (where, record) in enumerate(iter_records(path, kind, shown)):
            # ids as before: `file:line` for jsonl, `file:row` for tables
            default_id = where if kind == "jsonl" else f"{shown}:{number}"
            yield _record_document(record, where, source, default_id)


def schema_problem(fields: dict[str, str], source: FileSource) -> str | None:
    """Why a file with these fields (`formats.read_schema`) cannot give this source's documents."""
    names = ", ".join(sorted(fields)) or "none"
    if source.text_field not in fields:
        return f"no column {source.text_field!r} (columns: {names}); set `text_field` on the source"
    kind = fields[source.text_field]
    if kind not in (STRING, MESSAGES, "null"):
        return (f"column {source.text_field!r} is {kind}, not a string or a list of {{role, content}} "
                "messages; set `text_field` on the source")
    if source.id_field is not None and source.id_field not in fields:
        return f"no id column {source.id_field!r} (columns: {names}); set or remove `id_field`"
    return None


def _read_text_file(path: Path, shown: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _scalar_meta(record: dict, skip: set[str]) -> dict:
    """Keep a record's other scalar fields (e.g. `url`) for the rules filter."""
    return {key: value for key, value in record.items()
            if key not in skip and isinstance(value, (str, int, float, bool))}


def _record_document(record: object, where: str, source: FileSource, default_id: str) -> Document:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if source.text_field not in record:
        fields = ", ".join(sorted(record)) or "none"
        raise DataError(f"{where}: no text field {source.text_field!r} (fields: {fields}); "
                        "set `text_field` on the source")
    text = record[source.text_field]
    if value_type(text) == MESSAGES:
        text = messages_text(text)  # a chat `messages` field: the conversation as text
    if not isinstance(text, str):
        raise DataError(f"{where}: field {source.text_field!r} is {value_type(text)}, not a string "
                        "or a list of {role, content} messages")
    doc_id = default_id
    if source.id_field is not None:
        if record.get(source.id_field) is None:
            raise DataError(f"{where}: no id field {source.id_field!r}")
        doc_id = str(record[source.id_field])
    skip = {source.text_field} | ({source.id_field} if source.id_field else set())
    return Document(source.name, doc_id, text, _scalar_meta(record, skip))


def stdlib_files(max_files: int | None = None) -> list[Path]:
    """The running interpreter's standard-library `.py` files, sorted by relative path.

    `site-packages` is excluded: it varies between environments, the stdlib does not.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts),
                   key=lambda p: p.relative_to(root).as_posix())
    return files[:max_files] if max_files is not None else files


def iter_python_stdlib(source: PythonStdlibSource) -> Iterator[Document]:
    """Each stdlib `.py` file is a document; files that are not UTF-8 (a few test fixtures) are skipped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files(source.max_files):
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield Document(source.name, path.relative_to(root).as_posix(), text)
