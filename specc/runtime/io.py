"""The metrics file every stage appends to; the other file helpers (atomic writes, config
hashes, success markers) live in `specc.io` and are re-exported here for the runtime's imports.

One JSON object per line in `<stage dir>/metrics.jsonl` (the contract `specc status` reads).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from specc.integrity import storage_errors
from specc.io import (  # noqa: F401  (re-exported)
    atomic_write_json,
    atomic_write_text,
    check_upstream,
    completion_problem,
    config_hash,
    is_complete,
    mark_success,
    output_problems,
    read_marker,
    success_marker,
)


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once (a killed job keeps its lines)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._stream = open(path, "a", buffering=1)

    def write(self, **record: object) -> None:
        record.setdefault("time", round(time.time(), 3))
        with storage_errors(self.path, "metrics to"):
            self._stream.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
