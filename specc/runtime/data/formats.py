"""Record files behind a data path: jsonl, parquet, Arrow, and Hugging Face `save_to_disk` directories.

One resolver and one reader for every stage that reads records (the data stage's `files`
sources, the alignment stages' `data`/`prompts`) and for the pre-flight, which reads only
each file's schema: a parquet footer, an Arrow stream's schema message, the first jsonl lines.
No torch here (`specc validate` imports this module); pyarrow is imported when a table is read.

A data path is
- a file: `.jsonl`/`.json`/`.ndjson` (also `.gz`, `.zst`), `.parquet`, `.arrow`, else text;
- a glob (relative to the spec file, `**` recursive) of such files;
- a directory: a `datasets` `save_to_disk` directory (`state.json` lists its `.arrow` files,
  Arrow IPC *stream* format), a `DatasetDict` one (`dataset_dict.json`: its `train` split is
  read; name another split's subdirectory to read that), or any directory of parquet, Arrow
  or jsonl files (read recursively, in sorted order).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from specc.runtime.data.documents import DataError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz",
                  ".jsonl.zst", ".json.zst", ".ndjson.zst")
TABLE_KINDS = ("jsonl", "parquet", "arrow")
SCHEMA_LINES = 20
"""jsonl lines the pre-flight reads per file to learn its fields and their types."""
BATCH_ROWS = 1024


def detect_kind(path: Path) -> str:
    """`jsonl`, `parquet`, `arrow` or `text`, by the file's name."""
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return "text"


def display_name(path: Path, spec_dir: Path) -> str:
    try:
        return str(path.relative_to(spec_dir))
    except ValueError:
        return str(path)


def resolve_glob(pattern: str, spec_dir: Path, what: str) -> list[Path]:
    """Sorted files matching `pattern` (relative to the spec file); an error when none match.

    A pattern naming a directory expands to the record files it holds (`directory_files`)."""
    full = pattern if os.path.isabs(pattern) else str(spec_dir / pattern)
    if os.path.isdir(full):
        return directory_files(Path(full), pattern)
    files = sorted(Path(p) for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    if not files:
        if os.path.islink(full) and not os.path.exists(full):
            raise DataError(f"{what}: {pattern!r} is a symlink that leads to nothing (broken, or a loop)")
        raise DataError(f"{what}: no files match {pattern!r} (looked for {full})")
    return files


def directory_files(directory: Path, raw: str) -> list[Path]:
    """The record files of a `save_to_disk` directory (in its own order), or of any directory."""
    if (directory / "dataset_dict.json").is_file():
        splits = _json(directory / "dataset_dict.json").get("splits", [])
        if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
            raise DataError(f"{directory / 'dataset_dict.json'}: `splits` is {splits!r}, not a list of split names "
                            "(as `DatasetDict.save_to_disk` writes)")
        if "train" not in splits:
            raise DataError(f"{raw!r} is a DatasetDict with splits {', '.join(splits) or 'none'} and no `train`; "
                            f"name a split's directory, e.g. {raw.rstrip('/')}/{splits[0] if splits else 'train'}")
        return directory_files(directory / "train", f"{raw.rstrip('/')}/train")
    if (directory / "state.json").is_file():
        names = _saved_file_names(directory / "state.json")
        files = [directory / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if not files or missing:
            raise DataError(f"{raw!r}: state.json of this saved dataset lists "
                            f"{'no data files' if not files else 'missing files: ' + ', '.join(missing)}")
        return files
    files = sorted(p for p in directory.rglob("*") if p.is_file() and detect_kind(p) in TABLE_KINDS
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"directory {raw!r} holds no jsonl, parquet or .arrow files")
    return files


def _saved_file_names(state: Path) -> list[str]:
    """The data files a `save_to_disk` state.json lists (`_data_files: [{filename}]`): plain names
    inside the dataset's directory, as `datasets` writes them; anything else is a damaged or
    hand-made state.json, refused rather than followed outside the directory."""
    entries = _json(state).get("_data_files", [])
    if not isinstance(entries, list):
        raise DataError(f"{state}: `_data_files` is {entries!r}, not a list of {{filename: ...}} entries")
    names = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if name is None:
            continue
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise DataError(f"{state}: `_data_files` names {name!r}, not a file name in the dataset's directory")
        names.append(name)
    return names


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


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


# --- records -----------------------------------------------------------------------------


def iter_records(path: Path, kind: str, shown: str, limit: int | None = None) -> Iterator[tuple[str, object]]:
    """(where, record) per row, in file order; `where` is `file:line` or `file:row N`."""
    if kind == "jsonl":
        return _jsonl_records(path, shown, limit)
    if kind in ("parquet", "arrow"):
        return _table_records(path, kind, shown, limit)
    raise DataError(f"{shown}: {kind} files hold no records")


def _jsonl_records(path: Path, shown: str, limit: int | None) -> Iterator[tuple[str, object]]:
    seen = 0
    try:
        with open_text_stream(path) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{shown}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
                yield f"{shown}:{number}", record
                seen += 1
                if limit is not None and seen >= limit:
                    return
    except (OSError, EOFError, UnicodeDecodeError, *_decompression_errors()) as error:
        raise DataError(f"{shown}: cannot read ({error})") from None


def _decompression_errors() -> tuple[type[Exception], ...]:
    """What a corrupt .gz (a bad deflate stream: zlib.error) or .zst (ZstdError) raises mid-read;
    neither is an OSError."""
    import zlib

    try:
        import zstandard
    except ImportError:
        return (zlib.error,)
    return (zlib.error, zstandard.ZstdError)


def _table_records(path: Path, kind: str, shown: str, limit: int | None) -> Iterator[tuple[str, object]]:
    row = 0
    for batch in _batches(path, kind, shown):
        for record in batch.to_pylist():
            yield f"{shown}:row {row}", record
            row += 1
            if limit is not None and row >= limit:
                return


def _batches(path: Path, kind: str, shown: str) -> Iterator:
    """Record batches of a parquet file or an Arrow IPC stream (or file) without reading it whole."""
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as parquet

            yield from parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
            return
        with pa.memory_map(str(path)) as source:
            reader = _arrow_reader(source, shown)
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                yield from reader
    except DataError:
        raise
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: not a readable {kind} file ({error})") from None


def _arrow_reader(source, shown: str):
    """`datasets` writes the IPC stream format; `pyarrow.feather`/IPC-file writers the file format."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_file(source)
        except pa.ArrowInvalid as error:
            raise DataError(f"{shown}: not an Arrow IPC stream or file ({error})") from None


# --- schemas (what the pre-flight reads) -------------------------------------------------

STRING = "string"
MESSAGES = "messages"
"""A list of `{role, content}` objects: a chat conversation."""


def read_schema(path: Path, kind: str, shown: str) -> dict[str, str]:
    """Field name -> `string`, `messages` or another type's name, read cheaply: the parquet footer,
    the Arrow schema message, or the first `SCHEMA_LINES` jsonl records (a field's type is the
    first non-null value's)."""
    if kind == "jsonl":
        fields: dict[str, str] = {}
        for where, record in iter_records(path, kind, shown, SCHEMA_LINES):
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
            for key, value in record.items():
                if value is not None and fields.get(key) in (None, "null"):
                    fields[key] = value_type(value)
                fields.setdefault(key, "null")
        if not fields:
            raise DataError(f"{shown}: no records")
        return fields
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as parquet

            schema = parquet.ParquetFile(path).schema_arrow
        else:
            with pa.memory_map(str(path)) as source:
                schema = _arrow_reader(source, shown).schema
    except DataError:
        raise
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: not a readable {kind} file ({error})") from None
    return {field.name: arrow_type(field.type) for field in schema}


def value_type(value: object) -> str:
    """The type name of a JSON value, `messages` for a list of `{role, content}` objects."""
    if isinstance(value, str):
        return STRING
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in value):
        return MESSAGES
    if isinstance(value, list) and not value:
        return "an empty list"
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "a list of objects some without a `role` or `content`"
    return {list: "list", dict: "object", bool: "bool", int: "int", float: "float"}.get(type(value), type(value).__name__)


def arrow_type(data_type) -> str:
    import pyarrow as pa

    if (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or getattr(pa.types, "is_string_view", lambda _: False)(data_type)):
        return STRING
    if (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)) and pa.types.is_struct(data_type.value_type):
        names = {data_type.value_type.field(i).name for i in range(data_type.value_type.num_fields)}
        if {"role", "content"} <= names:
            return MESSAGES
    return str(data_type)


def messages_text(messages: list[dict]) -> str:
    """A conversation as pretraining text: `role: content` per message, separated by blank lines."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
