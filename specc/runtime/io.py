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
    """Appends one JSON object per line to metrics.jsonl, flushed at once (a killed job keeps its lines).

    When the stage's config turns tracking on, each record also goes to the experiment tracker
    (`specc.runtime.tracking`: TensorBoard event files)."""

    def __init__(self, path: Path):
        from specc.runtime.tracking import sink_for

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._stream = open(path, "a", buffering=1)
        self._sink = sink_for(path)

    def write(self, **record: object) -> None:
        record.setdefault("time", round(time.time(), 3))
        with storage_errors(self.path, "metrics to"):
            self._stream.write(json.dumps(record, sort_keys=True) + "\n")
        if self._sink is not None:
            self._sink.record(record)

    def close(self) -> None:
        self._stream.close()
        if self._sink is not None:
            self._sink.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
