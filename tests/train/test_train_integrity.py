"""Faults injected into what training trusts: damaged checkpoints, damaged token shards, a
diverging loss, a full disk while checkpointing or exporting. Each must end in a clear error
or a correct recovery, never in a run that completes from corrupted inputs."""

from __future__ import annotations

import errno
import json
import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from train_helpers import make_shards, read_metrics, stage_config, tiny_model, tiny_schedule, write_config

from specc.runtime import __main__ as runtime_main
from specc.integrity import IntegrityError, NonFiniteLossError, StorageError
from specc.runtime.train import loop as train_loop
from specc.runtime.train.loop import TrainSettings, train
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec

SCHEDULE = tiny_schedule(steps=12, checkpoint_interval=4, keep_checkpoints=3)


def settings(out: Path, shard_dir: Path, **extra) -> TrainSettings:
    return TrainSettings(ModelSpec.model_validate(tiny_model()),
                         ParallelSpec.model_validate({"dp": 1, "micro_batch": 4, "precision": "fp32"}),
                         ScheduleSpec.model_validate(SCHEDULE), out, shard_dir, **extra)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("integrity") / "shards")


def flip_bytes(path: Path, offset: int | None = None, count: int = 16) -> None:
    """Invert `count` bytes in the middle of `path` (same size, different content)."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def largest_shard(checkpoint: Path) -> Path:
    return max(checkpoint.glob("*.distcp"), key=lambda p: p.stat().st_size)


def test_checkpoint_records_every_file_with_size_and_sha256(tmp_path, shards):
    train(settings(tmp_path / "run", shards, max_steps=4))
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000004"
    files = json.loads((checkpoint / "checkpoint.json").read_text())["files"]
    on_disk = {p.name for p in checkpoint.iterdir()} - {"checkpoint.json"}
    assert set(files) == on_disk and ".metadata" in files and "rng-rank0.pt" in files
    for name, entry in files.items():
        assert entry["bytes"] == (checkpoint / name).stat().st_size and len(entry["sha256"]) == 64


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, shards, capsys):
    """Before: the relaunch resumed from the flipped shard and finished with loss=nan."""
    out = tmp_path / "run"
    train(settings(out, shards, max_steps=8))  # checkpoints at steps 4 and 8
    flip_bytes(largest_shard(out / "checkpoints" / "step-00000008"))
    capsys.readouterr()
    summary = train(settings(out, shards))
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "step-00000008 is damaged" in err and "sha256" in err
    assert "resuming from step-00000004 instead" in err
    assert (out / "checkpoints" / "corrupt-step-00000008").is_dir()
    records = read_metrics(out / "metrics.jsonl")
    resumed = [r["step"] for r in records if "loss" in r][8:]
    assert resumed[0] == 5  # steps 5..12 were trained again from step 4's state
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    assert summary["steps"] == 12 and math.isfinite(summary["final_loss"])


def test_truncated_checkpoint_file_is_caught_by_size(tmp_path, shards, capsys):
    out = tmp_path / "run"
    train(settings(out, shards, max_steps=8))
    rng = out / "checkpoints" / "step-00000008" / "rng-rank0.pt"
    rng.write_bytes(rng.read_bytes()[:10])
    train(settings(out, shards, max_steps=9))
    assert "rng-rank0.pt is truncated" in capsys.readouterr().err


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path, shards):
    out = tmp_path / "run"
    train(settings(out, shards, max_steps=8))
    for step in (4, 8):
        flip_bytes(largest_shard(out / "checkpoints" / f"step-{step:08d}"))
    with pytest.raises(IntegrityError, match=r"every checkpoint in .* is damaged \(step-00000008, step-00000004"):
        train(settings(out, shards))


def test_truncated_token_shard_is_an_error_naming_it(tmp_path, shards):
    """Before: pretraining completed on the truncated shard."""
    damaged = tmp_path / "shards"
    damaged.mkdir()
    for path in shards.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    shard = damaged / "train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=r"train-00001\.bin is truncated: [\d,]+ bytes, [\d,]+ recorded"):
        train(settings(tmp_path / "run", damaged, max_steps=2))


def test_flipped_token_shard_is_caught_before_the_first_step(tmp_path, shards):
    damaged = tmp_path / "shards"
    damaged.mkdir()
    for path in shards.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    flip_bytes(damaged / "train-00000.bin")
    with pytest.raises(IntegrityError, match=r"train-00000\.bin is damaged: its sha256 checksum differs"):
        train(settings(tmp_path / "run", damaged, max_steps=2))
    assert not (tmp_path / "run" / "checkpoints").exists()


def nan_from_step(monkeypatch, step: int) -> None:
    """The training loss becomes NaN from optimizer step `step` on (one micro-batch per step here:
    micro_batch 4 of a local batch of 8 is two calls per step), whichever loss (`parallel.loss`) runs."""
    calls = {"n": 0}

    def poison(original):
        def poisoned(*args, **kwargs):
            loss = original(*args, **kwargs)
            if torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] > 2 * (step - 1):
                    return loss * float("nan")
            return loss
        return poisoned

    monkeypatch.setattr(train_loop, "cross_entropy", poison(train_loop.cross_entropy))
    monkeypatch.setattr(train_loop, "mean_negative_logprob", poison(train_loop.mean_negative_logprob))


def test_nan_loss_stops_the_run_naming_the_step_and_last_good_checkpoint(tmp_path, shards, monkeypatch):
    """Before: the run went on to the end with loss=nan and was marked successful."""
    nan_from_step(monkeypatch, 6)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at step 6.*the last good checkpoint is "
                                                 r".*step-00000004"):
        train(settings(out, shards))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000004"]  # nothing diverged was saved
    assert read_metrics(out / "metrics.jsonl")[-1]["event"] == "non_finite_loss"


def test_nan_loss_exits_1_without_success_marker(tmp_path, shards, monkeypatch, capsys):
    """Through the stage runner: one line on stderr, exit 1 (not 75, which would requeue it)."""
    nan_from_step(monkeypatch, 2)
    config = stage_config(tmp_path, tiny_model(), SCHEDULE, shard_dir=str(shards))
    path = write_config(tmp_path / "config.json", config)
    assert runtime_main.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "specc pretrain: error: the loss is nan at step 2" in err and "there is no checkpoint yet" in err
    assert "Traceback" not in err
    assert not (tmp_path / "pretrain" / "_SUCCESS.json").exists()


@contextmanager
def _failing_stream(path, mode: str, after: int):
    """A real file that raises ENOSPC once `after` bytes were written (as a full disk does)."""
    with open(path, mode) as stream:
        written = {"n": 0}
        real_write = stream.write

        def write(data):
            if written["n"] + len(data) > after:
                real_write(bytes(data)[:max(after - written["n"], 0)])
                raise OSError(errno.ENOSPC, "No space left on device")
            written["n"] += len(data)
            return real_write(data)

        stream.write = write
        yield stream


def test_full_disk_while_checkpointing_is_a_storage_error(tmp_path, shards, monkeypatch):
    """Before: a torch serialization error without the reason."""
    from torch.distributed.checkpoint import filesystem

    monkeypatch.setattr(filesystem.FileSystem, "create_stream",
                        lambda self, path, mode: _failing_stream(path, mode, after=1000))
    out = tmp_path / "run"
    with pytest.raises(StorageError, match=r"cannot write checkpoint to .*checkpoints: No space left on device "
                                           r"\([\d.]+ [KMG]iB free on its filesystem\)"):
        train(settings(out, shards, max_steps=4))
    assert not list((out / "checkpoints").iterdir())  # no step-* and no .tmp left behind


def test_full_disk_while_exporting_weights_leaves_no_file(tmp_path, monkeypatch):
    from specc.runtime.infer import weights

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        # what safetensors raises: the OS error only inside a Rust debug string
        raise Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                        'message: "No space left on device" })')

    monkeypatch.setattr(weights, "save_file", save_file)
    with pytest.raises(StorageError, match=r"cannot write weights .*model\.safetensors: No space left on device"):
        weights.write_safetensors({"w": torch.zeros(4)}, tmp_path / "final" / "model.safetensors", {"format": "pt"})
    assert not list((tmp_path / "final").iterdir())


def test_two_ranks_record_their_own_files_and_fall_back_together(tmp_path, shards):
    """Under torchrun (2 ranks, FSDP): each rank hashes the shard file it wrote, both verify a
    share of the newest checkpoint, and a damaged file of rank 1 makes both fall back."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    parallel = {"dp": 2, "fsdp": True, "micro_batch": 2, "precision": "fp32"}
    schedule = tiny_schedule(steps=12, checkpoint_interval=2, keep_checkpoints=3)

    def launch(max_steps: int) -> subprocess.CompletedProcess:
        config = stage_config(tmp_path, tiny_model(), schedule, parallel, shard_dir=str(shards), max_steps=max_steps,
                              devices=2)
        path = write_config(tmp_path / f"config-{max_steps}.json", config)
        return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "specc.runtime", str(path)],
                              env=env, capture_output=True, text=True, timeout=600)

    first = launch(4)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    newest = tmp_path / "pretrain" / "checkpoints" / "step-00000004"
    files = json.loads((newest / "checkpoint.json").read_text())["files"]
    assert {"__0_0.distcp", "__1_0.distcp", "rng-rank0.pt", "rng-rank1.pt", ".metadata"} <= set(files)
    flip_bytes(newest / "__1_0.distcp")
    second = launch(6)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert "step-00000004 is damaged" in second.stderr and "resuming from step-00000002 instead" in second.stderr
    assert second.stderr.count("is damaged and will not be loaded") == 1  # rank 0 reports for both
    assert (tmp_path / "pretrain" / "checkpoints" / "step-00000006").is_dir()


def test_full_disk_during_export_keeps_the_previous_export_whole(tmp_path, monkeypatch):
    """An export is built in a hidden sibling and renamed into place: a failure leaves the old one."""
    from specc.runtime.deploy import export
    from specc.runtime.infer import weights

    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    target = tmp_path / "deploy" / "model"
    spec = ModelSpec.model_validate(tiny_model())
    export.export_safetensors({"w": torch.zeros(4)}, spec, target, tokenizer, {"method": "none", "group_size": 0})
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def save_file(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights, "save_file", save_file)
    with pytest.raises(StorageError, match=r"No space left on device \([\d.]+ [KMG]iB free"):
        export.export_safetensors({"w": torch.ones(4)}, spec, target, tokenizer, {"method": "none", "group_size": 0})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no .model.tmp left
