"""The local executor end to end: the tiny pipeline for real, then relaunches that skip by content hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch_helpers import FAST_TRAINING, TINY, launch_record, run_dir, specc, states, success

pytestmark = pytest.mark.slow  # runs the whole tiny pipeline


def _launch(out, *overrides: str):
    arguments = [item for override in overrides for item in ("--set", override)]
    result = specc("launch", str(TINY), "--executor", "local", "--out", str(out), *arguments)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    bundle = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: "))
    return Path(bundle), result


def test_launch_local_tiny_pipeline_then_relaunches_skip_by_content_hash(tmp_path):
    # 1. The whole pipeline runs, each stage after the previous one.
    bundle, _ = _launch(tmp_path, *FAST_TRAINING)
    record = launch_record(bundle)
    names = [entry["stage"] for entry in record["stages"]]
    assert names[:3] == ["data", "tokenize", "pretrain"]
    assert all(entry["state"] == "completed" for entry in record["stages"]), record
    for name in names:
        assert success(bundle, name), f"{name} wrote no _SUCCESS.json"
    status = specc("status", str(bundle))
    assert status.returncode == 0 and status.stdout.count("completed") == len(names)

    # 2. Relaunching the unchanged bundle skips every stage.
    again, result = _launch(tmp_path, *FAST_TRAINING)
    assert again == bundle and "unchanged, reused" in result.stdout
    assert set(states(bundle).values()) == {"skipped"}

    # 3. Changing only training settings reruns training (and what follows it), not data or tokenizer.
    before = success(bundle, "pretrain")
    second, _ = _launch(tmp_path, *FAST_TRAINING, "schedule.lr=2e-3")
    assert second != bundle
    expected = {name: ("skipped" if name in ("data", "tokenize") else "completed") for name in names}
    assert states(second) == expected
    after = success(second, "pretrain")
    assert after["config_sha256"] != before["config_sha256"]
    # Trained from scratch, not resumed from the other config's checkpoints (moved aside).
    first_record = json.loads((run_dir(second) / "pretrain" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_record["step"] == 1
    moved = sorted(p.name.split("-")[0] for p in (run_dir(second) / ".replaced").iterdir())
    assert moved == sorted(name for name in names if name not in ("data", "tokenize"))
