"""Documents and the compressed JSON-lines part files the data stage writes.

A document is `{source, id, text, meta}`; `meta` keeps a reader's other scalar fields
(a URL, for the rules filter) and the synthetic source's ground truth.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class DataError(Exception):
    """A problem with the user's data or data settings, shown without a traceback."""


@dataclass
class Document:
    source: str
    id: str
    text: str
    meta: dict = field(default_factory=dict)
    language: str | None = field(default=None, compare=False)
    """The language a `language` filter identified, for the per-language report (not written out)."""

    def to_json(self) -> str:
        record = {"source": self.source, "id": self.id, "text": self.text}
        if self.meta:
            record["meta"] = self.meta
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Document:
        record = json.loads(line)
        return cls(record["source"], record["id"], record["text"], record.get("meta", {}))


def write_documents(path: Path, documents: Iterable[Document]) -> int:
    """Write documents as gzip JSON lines atomically (temporary file, then rename); returns the count.

    gzip with mtime=0 so the same documents give byte-identical files (resume checks rely on it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: two writers never share one
    count = 0
    try:
        with open(temporary, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as stream:
            for document in documents:
                stream.write(document.to_json().encode() + b"\n")
                count += 1
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no partial file behind
        raise
    return count


def read_documents(path: Path) -> Iterator[Document]:
    """Stream the documents of a part file written by `write_documents`."""
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for line in stream:
            yield Document.from_json(line)
