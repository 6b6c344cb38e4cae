"""Source readers: each yields `Document`s one at a time (a corpus is never held in memory).

Files are visited in sorted path order and lines in file order, so the document order,
and every later decision that depends on it (which duplicate is kept), is deterministic.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from specc.runtime.data.documents import DataError, Document
from specc.runtime.data.synthetic import generate
from specc.spec.data import FileSource, PythonStdlibSource, SyntheticSource

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz",
                  ".jsonl.zst", ".json.zst", ".ndjson.zst")


def iter_source(source, spec_dir: Path) -> Iterator[Document]:
    """Documents of one spec source, in a deterministic order."""
    if isinstance(source, PythonStdlibSource):
        return iter_python_stdlib(source)
    if isinstance(source, SyntheticSource):
        return (record.document for record in generate(source))
    return iter_files(source, spec_dir)


def resolve_glob(pattern: str, spec_dir: Path, what: str) -> list[Path]:
    """Sorted files matching `pattern` (relative to the spec file); an error when none match."""
    full = pattern if os.path.isabs(pattern) else str(spec_dir / pattern)
    files = sorted(Path(p) for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    if not files:
        raise DataError(f"{what}: no files match {pattern!r} (looked for {full})")
    return files


def _display_name(path: Path, spec_dir: Path) -> str:
    try:
        return str(path.relative_to(spec_dir))
    except ValueError:
        return str(path)


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def iter_files(source: FileSource, spec_dir: Path) -> Iterator[Document]:
    for path in resolve_glob(source.path, spec_dir, f"source {source.name!r}"):
        kind = detect_format(path) if source.format == "auto" else source.format
        shown = _display_name(path, spec_dir)
        if kind == "jsonl":
            yield from _iter_jsonl(path, shown, source)
        elif kind == "parquet":
            yield from _iter_parquet(path, shown, source)
        else:
            yield Document(source.name, shown, _read_text_file(path, shown))


def _read_text_file(path: Path, shown: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{shown}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def open_text_stream(path: Path) -> io.TextIOBase:
    """Open a possibly compressed text file; `.zst` needs the `zstandard` package."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs the `zstandard` package "
                            "(pip install zstandard)") from None
        raw = open(path, "rb")
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="utf-8")
    return open(path, encoding="utf-8")


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
    if not isinstance(text, str):
        raise DataError(f"{where}: field {source.text_field!r} is {type(text).__name__}, not a string")
    doc_id = default_id
    if source.id_field is not None:
        if record.get(source.id_field) is None:
            raise DataError(f"{where}: no id field {source.id_field!r}")
        doc_id = str(record[source.id_field])
    skip = {source.text_field} | ({source.id_field} if source.id_field else set())
    return Document(source.name, doc_id, text, _scalar_meta(record, skip))


def _iter_jsonl(path: Path, shown: str, source: FileSource) -> Iterator[Document]:
    try:
        with open_text_stream(path) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                where = f"{shown}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
                yield _record_document(record, where, source, where)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{shown}: cannot read ({error})") from None


def _iter_parquet(path: Path, shown: str, source: FileSource) -> Iterator[Document]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError(f"{shown}: reading parquet needs the `pyarrow` package (pip install pyarrow)") from None
    try:
        table = parquet.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{shown}: not a readable parquet file ({error})") from None
    columns = table.schema_arrow.names
    if source.text_field not in columns:
        raise DataError(f"{shown}: no column {source.text_field!r} (columns: {', '.join(columns)}); "
                        "set `text_field` on the source")
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield _record_document(record, f"{shown}:row {row}", source, f"{shown}:{row}")
            row += 1


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
