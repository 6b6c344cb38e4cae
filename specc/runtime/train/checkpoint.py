"""Atomic, resumable distributed checkpoints (torch.distributed.checkpoint).

A checkpoint is `<dir>/step-NNNNNNNN/`: DCP shards of every model part and optimizer
(FQN-keyed, so it loads under another layout), `rng-rank<R>.pt` per rank, and
`checkpoint.json` (step, data position, lr schedulers). Every rank writes into
`.step-NNNNNNNN.tmp/`; after a barrier rank 0 writes `checkpoint.json` and renames the
directory. The rename is the commit: a killed save leaves only a `.tmp` directory, which
is never loaded and is deleted by the next save. The newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from specc.runtime.io import atomic_write_json

STEP_DIR = re.compile(r"^step-(\d{8})$")
OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def _quiet_single_process():
    """DCP warns that it 'assumes a single process' when no process group exists: that is the intent."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def complete_checkpoints(directory: Path) -> list[Path]:
    """Committed checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if STEP_DIR.match(p.name) and (p / "checkpoint.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def _state(parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> tuple[dict, list[tuple[dict, dict]]]:
    """One FQN-keyed dict over all model parts (pipeline chunks) and their optimizers."""
    per_part = [get_state_dict(part, opt, options=OPTIONS) for part, opt in zip(parts, optimizers)]
    model, optim = {}, {}
    for model_sd, optim_sd in per_part:
        model.update(model_sd)
        optim.update(optim_sd)
    return {"model": model, "optim": optim}, per_part


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(directory: Path, step: int, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                    schedulers: list, keep: int, extra: dict | None = None) -> Path:
    """Write, commit by rename, and prune to the newest `keep` (collective: every rank calls it)."""
    final = directory / f"step-{step:08d}"
    temporary = directory / f".step-{step:08d}.tmp"
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    state, _ = _state(parts, optimizers)
    with _quiet_single_process():
        dcp.save(state, checkpoint_id=str(temporary))
    torch.save(_rng_state(), temporary / f"rng-rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        commit_checkpoint(temporary, final, keep, {
            "step": step, "lr_schedulers": [s.state_dict() for s in schedulers], **(extra or {})})
    _barrier()
    return final


def commit_checkpoint(temporary: Path, final: Path, keep: int, meta: dict) -> None:
    """Write checkpoint.json last, rename the temporary directory into place (a reader never sees a
    half-written checkpoint), then prune to the newest `keep`. One process calls it."""
    atomic_write_json(temporary / "checkpoint.json", meta)
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    for old in complete_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                    schedulers: list) -> dict:
    """Restore model parts, optimizers, lr schedulers and this rank's RNG; returns checkpoint.json."""
    state, per_part = _state(parts, optimizers)
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(path))
    for (part, opt), (model_sd, optim_sd) in zip(zip(parts, optimizers), per_part):
        set_state_dict(part, opt, model_state_dict=model_sd, optim_state_dict=optim_sd, options=OPTIONS)
    meta = json.loads((path / "checkpoint.json").read_text())
    for scheduler, scheduler_state in zip(schedulers, meta["lr_schedulers"]):
        scheduler.load_state_dict(scheduler_state)
        # DCP restores tensors, not the python floats of param_groups: set the lr the
        # restored schedule says the next step uses.
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    rng_file = path / f"rng-rank{_rank()}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return meta
