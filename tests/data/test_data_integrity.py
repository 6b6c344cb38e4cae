"""Faults injected into the data and tokenize stages' outputs: deleted or damaged outputs behind a
`_SUCCESS.json`, a corrupt tokenizer.json, a full disk while writing shards or documents."""

from __future__ import annotations

import errno
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from data_helpers import stage_config

from specc import integrity
from specc.integrity import StageError
from specc.io import completion_problem, is_complete
from specc.runtime.data import documents as documents_module
from specc.runtime.data import stage as data_stage
from specc.runtime.infer.weights import load_codec
from specc.runtime.tokenizer import stage as tokenize_stage


def make_data_config(spec_dir: Path) -> dict:
    return {"corpus": {"sources": [{"type": "synthetic", "name": "prose", "num_documents": 150, "seed": 4}],
                       "validation_fraction": 0.1, "seed": 2},
            "filters": [{"type": "length", "min_chars": 50, "max_chars": 200_000}],
            "dedup": {"exact": True, "num_workers": 1}, "spec_dir": str(spec_dir), "part_documents": 100}


def make_tokenize_config() -> dict:
    return {"tokenizer": {"vocab_size": 300, "sample_documents": 100, "compare_vocab_sizes": []},
            "corpus": {"sources": [{"type": "synthetic", "name": "prose"}], "validation_fraction": 0.1, "seed": 2},
            "model_vocab_size": 512}


def run_both(run_dir: Path) -> tuple[dict, dict]:
    data_config = stage_config("data", run_dir, make_data_config(run_dir.parent))
    data_stage.run(data_config)
    tokenize_config = stage_config("tokenize", run_dir, make_tokenize_config())
    tokenize_stage.run(tokenize_config)
    return data_config, tokenize_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """Both stages run once; (the run directory, a pristine copy of it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_both(run_dir)
    pristine = run_dir.with_name("pristine")
    shutil.copytree(run_dir, pristine)  # copy2 keeps modification times: the quick check still holds
    return run_dir, pristine


@pytest.fixture
def run(finished) -> tuple[Path, dict, dict]:
    """The finished run, restored in place (configs name their run_dir) for each test to damage."""
    run_dir, pristine = finished
    shutil.rmtree(run_dir)
    shutil.copytree(pristine, run_dir)
    data_config = stage_config("data", run_dir, make_data_config(run_dir.parent))
    tokenize_config = stage_config("tokenize", run_dir, make_tokenize_config())
    return run_dir, data_config, tokenize_config


def train_shard(run_dir: Path) -> Path:
    return next((run_dir / "tokenize" / "shards" / "parts").rglob("train-00000.bin"))


def test_success_markers_record_outputs_with_sizes_and_checksums(run):
    finished = run[0]
    data = json.loads((finished / "data" / "_SUCCESS.json").read_text())["outputs"]
    assert "manifest.json" in data and any(name.startswith("output/") for name in data)
    tokenize = json.loads((finished / "tokenize" / "_SUCCESS.json").read_text())["outputs"]
    shard = train_shard(finished).relative_to(finished / "tokenize").as_posix()
    assert {"tokenizer.json", "shards/meta.json", shard} <= set(tokenize)
    for name, entry in tokenize.items():
        assert entry["bytes"] == (finished / "tokenize" / name).stat().st_size and len(entry["sha256"]) == 64
    meta = json.loads((finished / "tokenize" / "shards" / "meta.json").read_text())
    first = meta["splits"]["train"][0]
    assert first["sha256"] == tokenize[f"shards/{first['file']}"]["sha256"]  # streamed once, reused


def test_deleted_output_behind_success_marker_makes_the_stage_run_again(run):
    """Before: the stage was skipped and the next stage ran without its outputs."""
    run_dir, _, tokenize_config = run
    shard = train_shard(run_dir)
    original = shard.read_bytes()
    shard.unlink()
    assert completion_problem(run_dir / "tokenize", tokenize_config) == (
        f"its outputs changed since it finished: {shard} is missing")
    tokenize_stage.run(tokenize_config)
    assert is_complete(run_dir / "tokenize", tokenize_config)
    assert shard.read_bytes() == original  # re-encoded, deterministically


def test_edited_output_is_caught_by_checksum_when_its_mtime_changed(run):
    run_dir, data_config, _ = run
    manifest = run_dir / "data" / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"prose"', '"PROSE"'))  # same size, other bytes
    assert "manifest.json is damaged: its sha256 checksum differs" in completion_problem(run_dir / "data", data_config)


def test_tokenize_refuses_changed_data_outputs(run):
    run_dir, _, tokenize_config = run
    first = next((run_dir / "data" / "output").iterdir())
    first.write_bytes(first.read_bytes()[:-10])
    (run_dir / "tokenize" / "_SUCCESS.json").unlink()
    with pytest.raises(SystemExit, match=r"the data stage's outputs in .* changed after it finished: .* is truncated"):
        tokenize_stage.run(tokenize_config)


def test_corrupt_tokenizer_json_is_an_error_naming_the_file(run):
    """Before: evaluation failed with a bare JSON parse exception."""
    run_dir, _, tokenize_config = run
    path = run_dir / "tokenize" / "tokenizer.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(StageError, match=rf"{path} is not a readable tokenizer"):
        load_codec(path)
    assert "tokenizer.json is truncated" in completion_problem(run_dir / "tokenize", tokenize_config)


@contextmanager
def fails_after(path, mode="wb", after: int = 64, **kwargs):
    """`open` whose writes raise ENOSPC once `after` bytes were written (a disk filling up)."""
    stream = open(path, mode, **kwargs)
    written = {"n": 0}
    real_write = stream.write

    def write(data):
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if written["n"] + size > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["n"] += size
        return real_write(data)

    stream.write = write
    try:
        yield stream
    finally:
        stream.close()


def test_full_disk_while_writing_shards_is_a_clear_error_and_leaves_nothing_complete(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    data_stage.run(stage_config("data", run_dir, make_data_config(tmp_path)))
    monkeypatch.setattr(integrity, "open", fails_after, raising=False)
    with pytest.raises(SystemExit, match=r"specc tokenize: error: cannot write token shard .*train-00000\.bin: "
                                         r"No space left on device \([\d.]+ [KMG]iB free on its filesystem\)"):
        tokenize_stage.run(stage_config("tokenize", run_dir, make_tokenize_config()))
    stage_dir = run_dir / "tokenize"
    assert not (stage_dir / "_SUCCESS.json").exists() and not list(stage_dir.rglob("part.json"))
    assert not list(stage_dir.rglob("*.tmp")) and not list(stage_dir.rglob("*.bin"))
    monkeypatch.undo()
    tokenize_stage.run(stage_config("tokenize", run_dir, make_tokenize_config()))  # space freed: it completes
    assert is_complete(stage_dir, stage_config("tokenize", run_dir, make_tokenize_config()))


def test_full_disk_while_writing_documents_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(documents_module, "open", fails_after, raising=False)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"specc data: error: cannot write data outputs under .*data: "
                                         r"No space left on device \([\d.]+ [KMG]iB free"):
        data_stage.run(stage_config("data", run_dir, make_data_config(tmp_path)))
    assert not (run_dir / "data" / "_SUCCESS.json").exists()
    assert not list((run_dir / "data").rglob("*.tmp")) and not list((run_dir / "data").rglob("*.jsonl.gz"))
