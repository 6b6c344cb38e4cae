"""What the data stage will read, known before it reads it: the totals behind its progress and ETA.

`specc launch` shows the data stage's documents and bytes against these totals (from the
`event: "plan"` record of metrics.jsonl). A total is None where it cannot be known without
reading the source: the documents of a jsonl file or an Arrow stream, the text bytes of a compressed
or columnar one. Parquet row counts come from each file's footer.
"""

from __future__ import annotations

from pathlib import Path

from specc.spec.data import FileSource, PythonStdlibSource, SyntheticSource

_PLAIN_TEXT = (".jsonl", ".json", ".txt", ".md")


def source_totals(sources: list, spec_dir: str | Path) -> dict[str, dict[str, int | None]]:
    """{source name: {"documents": N or None, "bytes": B or None}} from the spec and a stat per file."""
    return {source.name: _totals(source, Path(spec_dir)) for source in sources}


def _totals(source, spec_dir: Path) -> dict[str, int | None]:
    if isinstance(source, SyntheticSource):
        return {"documents": source.num_documents, "bytes": None}
    if isinstance(source, PythonStdlibSource):
        from specc.runtime.data.sources import stdlib_files

        files = stdlib_files(source.max_files)
        return {"documents": len(files), "bytes": sum(_size(path) for path in files)}
    if isinstance(source, FileSource):
        from specc.runtime.data.documents import DataError
        from specc.runtime.data.sources import source_files

        try:
            files = source_files(source, spec_dir)
        except DataError:
            return {"documents": None, "bytes": None}  # the stage reports the path itself
        kinds = {kind for _, kind in files}
        # text bytes of plain files ~ their size (JSON escaping adds a little); compressed or columnar: unknown
        plain = all(kind == "text" or path.name.lower().endswith(_PLAIN_TEXT) for path, kind in files)
        return {"documents": _documents(files, kinds), "bytes": sum(_size(f) for f, _ in files) if plain else None}
    return {"documents": None, "bytes": None}


def _documents(files: list[tuple[Path, str]], kinds: set[str]) -> int | None:
    """One per text file; a parquet file's row count from its footer; else unknown (jsonl, Arrow streams)."""
    if kinds == {"text"}:
        return len(files)
    if kinds == {"parquet"}:
        import pyarrow.parquet as parquet

        try:
            return sum(parquet.ParquetFile(path).metadata.num_rows for path, _ in files)
        except Exception:  # noqa: BLE001 - a bad file is the stage's to report, with its name
            return None
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
