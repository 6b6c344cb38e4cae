"""What the data stage will read, known before it reads it: the totals behind its progress and ETA.

`specc launch` shows the data stage's documents and bytes against these totals (from the
`event: "plan"` record of metrics.jsonl). A total is None where it cannot be known without
reading the source: the documents of a jsonl or parquet file, the text bytes of a compressed one.
"""

from __future__ import annotations

import glob
import os
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
        pattern = source.path if os.path.isabs(source.path) else str(spec_dir / source.path)
        files = [Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        text_files = source.format == "text" or (source.format == "auto" and not any(
            f.name.lower().endswith((".jsonl", ".json", ".parquet", ".gz", ".zst")) for f in files))
        plain = all(f.name.lower().endswith(_PLAIN_TEXT) or text_files for f in files)
        # text bytes of plain files ~ their size (JSON escaping adds a little); compressed: unknown
        return {"documents": len(files) if text_files else None,
                "bytes": sum(_size(f) for f in files) if plain else None}
    return {"documents": None, "bytes": None}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
