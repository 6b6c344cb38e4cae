"""Small file helpers every stage needs: atomic writes, metrics lines, success markers."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: object) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def config_hash(config: dict) -> str:
    """sha256 of a config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once (a killed job keeps its lines)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._stream = open(path, "a", buffering=1)

    def write(self, **record: object) -> None:
        record.setdefault("time", round(time.time(), 3))
        self._stream.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def success_marker(stage_dir: Path) -> Path:
    return stage_dir / "_SUCCESS.json"


def mark_success(stage_dir: Path, config: dict, **summary: object) -> None:
    """Record that the stage finished for this exact config (written last)."""
    atomic_write_json(success_marker(stage_dir), {"config_sha256": config_hash(config), **summary})


def is_complete(stage_dir: Path, config: dict) -> bool:
    """True if the stage already finished with this exact config."""
    marker = success_marker(stage_dir)
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("config_sha256") == config_hash(config)
    except (OSError, json.JSONDecodeError):
        return False
