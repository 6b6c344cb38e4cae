"""Small file helpers every stage needs: atomic writes, metrics lines, success markers.

A stage's success marker `_SUCCESS.json` records its config's hash and, under `outputs`, the
size and sha256 of every file later stages trust (`specc.runtime.integrity`). A stage counts
as complete only while those files are still there with those sizes, so deleting or
truncating an output makes the launcher re-run the stage instead of skipping it. Checksums
are re-computed on that check only for files whose modification time changed since the
marker was written (rsync's quick check): a skip costs a stat per file, while an output
edited in place is still caught (0.7 s per GiB to re-hash, `benchmarks/checksum_cost.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from specc.runtime.integrity import StageError, entry_problem, listing, manifest_of, storage_errors


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file.

    A full disk or I/O error is a StorageError naming the path and the free space, and leaves
    no temporary file behind."""
    with storage_errors(path):
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


def success_marker(stage_dir: Path) -> Path:
    return stage_dir / "_SUCCESS.json"


def mark_success(stage_dir: Path, config: dict, outputs: Iterable[str | Path] = (),
                 known: dict[str, dict] | None = None, **summary: object) -> None:
    """Record that the stage finished for this exact config, with the size, checksum and
    modification time of every file at or under `outputs` (paths relative to `stage_dir`);
    written last. `known` reuses digests a writer already streamed (relative path -> entry)."""
    manifest = manifest_of(stage_dir, [Path(p) for p in outputs], known)
    for relative, entry in manifest.items():
        entry["mtime_ns"] = (stage_dir / relative).stat().st_mtime_ns
    atomic_write_json(success_marker(stage_dir),
                      {"config_sha256": config_hash(config), "outputs": manifest, **summary})


def read_marker(stage_dir: Path) -> dict | None:
    """The stage's `_SUCCESS.json`, or None when there is none or it is unreadable."""
    try:
        marker = json.loads(success_marker(stage_dir).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def output_problems(stage_dir: Path, marker: dict) -> list[str]:
    """The recorded outputs that are missing or changed: sizes always; checksums for files whose
    modification time differs from the recorded one (a marker from before outputs were
    recorded has none to check)."""
    outputs = marker.get("outputs") or {}
    problems = []
    for relative, entry in outputs.items():
        path = stage_dir / relative
        try:
            touched = path.stat().st_mtime_ns != entry.get("mtime_ns")
        except OSError:
            touched = True
        problem = entry_problem(path, entry, checksum=touched)
        if problem is not None:
            problems.append(problem)
    return problems


def completion_problem(stage_dir: Path, config: dict) -> str | None:
    """Why the stage must (re-)run: None when it finished with this exact config and its
    recorded outputs are intact."""
    if not success_marker(stage_dir).exists():
        return "not finished"
    marker = read_marker(stage_dir)
    if marker is None:
        return f"{success_marker(stage_dir)} is unreadable"
    if marker.get("config_sha256") != config_hash(config):
        return "finished with another config"
    problems = output_problems(stage_dir, marker)
    if problems:
        return "its outputs changed since it finished: " + listing(problems)
    return None


def is_complete(stage_dir: Path, config: dict) -> bool:
    """True if the stage already finished with this exact config and its outputs are intact."""
    return completion_problem(stage_dir, config) is None


def check_upstream(stage_dir: Path, stage: str) -> None:
    """Refuse to start from an upstream stage whose recorded outputs are missing or changed.

    Does nothing when the upstream directory has no marker (inputs made by hand or elsewhere
    are checked by their own readers)."""
    marker = read_marker(stage_dir)
    if marker is None:
        return
    problems = output_problems(stage_dir, marker)
    if problems:
        raise StageError(f"the {stage} stage's outputs in {stage_dir} changed after it finished: "
                         + listing(problems) + f"; relaunch to re-run the {stage} stage")
