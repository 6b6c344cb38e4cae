"""Atomic, resumable distributed checkpoints (torch.distributed.checkpoint).

A checkpoint is `<dir>/step-NNNNNNNN/`: DCP shards of every model part and optimizer
(FQN-keyed, so it loads under another layout), `rng-rank<R>.pt` per rank, and
`checkpoint.json` (step, data position, lr schedulers). Every rank writes into
`.step-NNNNNNNN.tmp/`; after a barrier rank 0 writes `checkpoint.json` and renames the
directory. The rename is the commit: a killed save leaves only a `.tmp` directory, which
is never loaded and is deleted by the next save. The newest `keep` checkpoints are kept.

Integrity: every rank hashes the files it wrote (its `__<rank>_*.distcp` shards and RNG file,
re-read from the page cache right after writing), rank 0 the rest (`.metadata`), and
`checkpoint.json` records them all under `files` (size + sha256). Before resuming, the ranks
verify the newest checkpoint together (each re-hashes a share of the files); a damaged one is
renamed `corrupt-step-NNNNNNNN` with a warning and the previous one is tried, so training never
resumes from garbage. A full disk during a save is a StorageError naming the directory and
the free space; the unfinished `.tmp` directory is removed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from specc.runtime.integrity import (IntegrityError, NonFiniteLossError, StorageError, entry_problem, file_digest,
                                     listing, storage_cause, storage_error)
from specc.runtime.io import atomic_write_json

STEP_DIR = re.compile(r"^step-(\d{8})$")
OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_gather(value: object) -> list:
    """`value` from every rank, in rank order (collective; one process: [value])."""
    if _world() == 1:
        return [value]
    gathered: list = [None] * _world()
    dist.all_gather_object(gathered, value)
    return gathered


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
    """Write, hash, commit by rename, and prune to the newest `keep` (collective: every rank calls it)."""
    final = directory / f"step-{step:08d}"
    temporary = directory / f".step-{step:08d}.tmp"
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    state, _ = _state(parts, optimizers)
    try:
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=str(temporary))
    except (Exception, CheckpointException) as error:  # DCP's own exception is a BaseException
        raise _save_failed(temporary, error) from error
    outcome = write_and_hash(temporary, lambda: _save_torch(_rng_state(), temporary / f"rng-rank{_rank()}.pt"))
    files = gather_manifest(temporary, outcome)
    if _rank() == 0:
        commit_checkpoint(temporary, final, keep, {
            "step": step, "lr_schedulers": [s.state_dict() for s in schedulers], **(extra or {})}, files)
    _barrier()
    return final


def _save_torch(value: object, path: Path) -> None:
    """torch.save through a Python file, so a full disk raises OSError(ENOSPC) rather than a
    serializer RuntimeError that hides the reason."""
    with open(path, "wb") as stream:
        torch.save(value, stream)


def _save_failed(temporary: Path, error: BaseException) -> BaseException:
    """The error to raise for a failed save: a StorageError naming the directory and the free
    space when the storage is at fault; the unfinished directory is removed either way."""
    if _rank() == 0:
        shutil.rmtree(temporary, ignore_errors=True)
    cause = storage_cause(error)
    return storage_error(temporary.parent, cause, "checkpoint to") if cause is not None else error


def own_files(temporary: Path, rank: int) -> list[Path]:
    """The files this rank wrote into a checkpoint: DCP names them `__<rank>_<n>.distcp`."""
    return sorted(p for p in temporary.iterdir()
                  if p.is_file() and (p.name.startswith(f"__{rank}_") or p.name == f"rng-rank{rank}.pt"))


def write_and_hash(temporary: Path, write) -> dict:
    """Run this rank's own `write()`, then hash the files it wrote; a storage failure is
    returned (not raised) so that every rank learns of it and raises together."""
    try:
        write()
        return {"files": {p.name: file_digest(p) for p in own_files(temporary, _rank())}}
    except OSError as error:
        cause = storage_cause(error)
        if cause is None:
            raise
        return {"error": str(storage_error(temporary.parent, cause, "checkpoint to"))}


def gather_manifest(temporary: Path, outcome: dict) -> dict[str, dict]:
    """Every rank's file entries, and rank 0's entries for the files no rank claimed
    (`.metadata`); raises StorageError on every rank if any rank failed to write."""
    outcomes = all_gather(outcome)
    errors = [f"rank {rank}: {o['error']}" for rank, o in enumerate(outcomes) if "error" in o]
    if errors:
        if _rank() == 0:
            shutil.rmtree(temporary, ignore_errors=True)
        raise StorageError("; ".join(errors))
    files: dict[str, dict] = {}
    for o in outcomes:
        files.update(o["files"])
    if _rank() == 0:
        for path in sorted(temporary.iterdir()):
            if path.is_file() and path.name not in files:
                files[path.name] = file_digest(path)
    return dict(sorted(files.items()))


def commit_checkpoint(temporary: Path, final: Path, keep: int, meta: dict, files: dict[str, dict]) -> None:
    """Write checkpoint.json (with every file's size and checksum) last, rename the temporary
    directory into place (a reader never sees a half-written checkpoint), then prune to the
    newest `keep`. One process calls it."""
    try:
        atomic_write_json(temporary / "checkpoint.json", {**meta, "files": files})
    except StorageError:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    temporary.rename(final)
    for old in complete_checkpoints(final.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def diverged(step: int, loss: float, directory: Path) -> NonFiniteLossError:
    """The error that stops a run whose loss became NaN/inf, naming the step and the newest
    checkpoint to go back to (checkpoints are never written from a diverged state)."""
    saved = complete_checkpoints(directory)
    last = f"the last good checkpoint is {saved[-1]}" if saved else "there is no checkpoint yet"
    return NonFiniteLossError(f"the loss is {loss} at step {step}; training stopped there without saving the "
                              f"diverged state; {last}. Lower schedule.lr, raise warmup_steps or set "
                              "schedule.grad_clip, then relaunch (it resumes from that checkpoint)")


# --- verification before resuming ----------------------------------------------------------


def checkpoint_problems(path: Path, rank: int = 0, world: int = 1) -> list[str]:
    """What is wrong with checkpoint `path`, checking this rank's share of its files (sizes of all,
    checksums of every world-th file) so that the ranks together read each file once."""
    try:
        meta = json.loads((path / "checkpoint.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        return [f"{path / 'checkpoint.json'} is unreadable ({error})"]
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict):
        if rank == 0:
            print(f"warning: {path} was written before checkpoints recorded their checksums; loading it "
                  "unverified", file=sys.stderr, flush=True)
        return []
    problems = []
    for index, (name, entry) in enumerate(sorted(files.items())):
        problem = entry_problem(path / name, entry, checksum=index % world == rank)
        if problem is not None:
            problems.append(problem)
    return problems


def newest_intact(directory: Path, stage: str = "pretrain") -> Path | None:
    """The newest complete checkpoint whose files match their checksums (collective).

    Damaged ones are renamed `corrupt-step-NNNNNNNN` (kept for inspection, never loaded again)
    with a warning naming the problem and the checkpoint resumed instead. None when there is no
    checkpoint; IntegrityError when every checkpoint is damaged (training from scratch over
    them would discard the run silently).
    """
    candidates = complete_checkpoints(directory)
    damaged: list[str] = []
    for path in reversed(candidates):
        problems = sorted({p for share in all_gather(checkpoint_problems(path, _rank(), _world())) for p in share})
        if not problems:
            if damaged and _rank() == 0:
                print(f"{stage}: warning: resuming from {path.name} instead", file=sys.stderr, flush=True)
            return path
        aside = path.with_name(f"corrupt-{path.name}")
        damaged.append(path.name)
        if _rank() == 0:
            print(f"{stage}: warning: checkpoint {path} is damaged and will not be loaded: "
                  f"{listing(problems)}; moved to {aside.name}", file=sys.stderr, flush=True)
            if aside.exists():
                shutil.rmtree(aside)
            path.rename(aside)
        _barrier()
    if damaged:
        raise IntegrityError(f"every checkpoint in {directory} is damaged ({', '.join(damaged)}, now renamed "
                             "corrupt-*); nothing intact to resume from: move them away to train from step 0")
    return None


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
