"""Atomic, resumable checkpoints of an SPMD model with torch-xla's distributed checkpoint.

The layout and commit protocol are the GPU path's (`specc.runtime.train.checkpoint`):
`<dir>/step-NNNNNNNN/` holds DCP shards of `{"model", "optim"}` written by
`SPMDSavePlanner` (each host writes the shards its devices own, with their global
offsets, so the checkpoint loads under another mesh), plus `checkpoint.json` (step, data
position, lr scheduler, XLA RNG seed). Every host writes into `.step-NNNNNNNN.tmp/`; after
a barrier process 0 writes `checkpoint.json` and renames the directory: the rename is the
commit, so a killed save leaves only a `.tmp` directory that is never loaded and is deleted
by the next save. The newest `keep` checkpoints are kept. Integrity (files recorded with size
and sha256 in `checkpoint.json`, verified before resuming, a damaged newest checkpoint set
aside for the previous one, a full disk a StorageError) is the GPU path's, from the same helpers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr
from torch import nn
from torch_xla.experimental.distributed_checkpoint import SPMDLoadPlanner, SPMDSavePlanner, prime_optimizer

from torch.distributed.checkpoint.api import CheckpointException

from specc.runtime.train.checkpoint import (_save_failed, commit_checkpoint, complete_checkpoints, gather_manifest,
                                            newest_intact, write_and_hash)

__all__ = ["complete_checkpoints", "load_checkpoint", "newest_intact", "save_checkpoint"]


def _barrier() -> None:
    """All hosts meet here (no-op with one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by FQN, a tied output head stored once (as the GPU path's export does)."""
    state = model.state_dict()
    if model.output is not None and model.embeddings is not None \
            and model.output.weight is model.embeddings.tok_embeddings.weight:
        state.pop("output.weight")
    return state


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {"model": model_state(model), "optim": optimizer.state_dict()}


def save_checkpoint(directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, keep: int, extra: dict | None = None) -> Path:
    """Write, commit by rename, and prune to the newest `keep` (every host calls it)."""
    final = directory / f"step-{step:08d}"
    temporary = directory / f".step-{step:08d}.tmp"
    is_main = xr.process_index() == 0
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    torch_xla.sync()  # the state must be materialised device data before DCP reads its shards
    try:
        dcp.save(_state(model, optimizer), storage_writer=dcp.FileSystemWriter(str(temporary)),
                 planner=SPMDSavePlanner())
    except (Exception, CheckpointException) as error:  # DCP's own exception is a BaseException
        raise _save_failed(temporary, error) from error
    files = gather_manifest(temporary, write_and_hash(temporary, lambda: None))
    if is_main:
        commit_checkpoint(temporary, final, keep, {
            "step": step, "lr_scheduler": scheduler.state_dict(), "xla_rng_seed": xm.get_rng_state(),
            **(extra or {})}, files)
    _barrier()
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore model, optimizer, lr scheduler and the XLA RNG in place; returns checkpoint.json.

    DCP loads into existing tensors, so the optimizer state is first created by one zero-gradient
    step (`prime_optimizer`) whose effect the load then overwrites.
    """
    prime_optimizer(optimizer)
    state = _state(model, optimizer)
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(path)), planner=SPMDLoadPlanner())
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    assert set(missing) <= {"output.weight"} and not unexpected, (missing, unexpected)  # only the tied head
    optimizer.load_state_dict(state["optim"])
    meta = json.loads((path / "checkpoint.json").read_text())
    scheduler.load_state_dict(meta["lr_scheduler"])
    # the schedule's python floats are not in the DCP tensors: set the lr the next step uses
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr
    xm.set_rng_state(int(meta["xla_rng_seed"]))
    torch_xla.sync()
    return meta
