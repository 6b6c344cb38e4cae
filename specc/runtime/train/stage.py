"""The `pretrain` stage: `run(config)` trains from the token shards and exports final weights.

config.json: {"stage": "pretrain", "run_dir": ..., "params": {"model", "parallel", "schedule",
"devices", "accelerator", "predicted"}} (see `specc.emit.configs.pretrain.build_pretrain_config`).
Inputs: `<run_dir>/tokenize/shards/`. Outputs under `<run_dir>/pretrain/`: `checkpoints/`,
`metrics.jsonl`, `final/{model.safetensors, config.json}`, then `_SUCCESS.json`.

Run with `python -m specc.runtime config.json` (one process) or under torchrun/Slurm
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from the environment). On
SIGTERM/SIGUSR2 the stage checkpoints and exits with status 75
(`specc.runtime.lifecycle.EXIT_REQUEUE`); rerunning the same config resumes from the newest
complete checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from specc.catalog import accelerator_from_entry, use_user_catalog
from specc.runtime.infer.weights import write_safetensors
from specc.runtime.io import atomic_write_json, mark_success
from specc.runtime.stages import skips_when_complete
from specc.runtime.train.loop import TrainSettings, train
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec


def settings_from_config(config: dict) -> TrainSettings:
    """Re-validate the stage params with the spec models (the config is data, not trusted code)."""
    params = config["params"]
    run_dir = Path(config["run_dir"])
    if params.get("accelerator_entry"):  # the spec's `cluster.catalog` accelerator (build_pretrain_config)
        entry = accelerator_from_entry(params["accelerator_entry"])
        use_user_catalog({entry.id: entry})
    return TrainSettings(
        model=ModelSpec.model_validate(params["model"]),
        parallel=ParallelSpec.model_validate(params["parallel"]),
        schedule=ScheduleSpec.model_validate(params["schedule"]),
        out_dir=run_dir / "pretrain",
        shard_dir=Path(params.get("shard_dir") or run_dir / "tokenize" / "shards"),
        predicted=params.get("predicted"),
        accelerator=params.get("accelerator", "cpu"),
        max_steps=params.get("max_steps"),
    )


def export_final(parts: list[torch.nn.Module], model: ModelSpec, directory: Path, representative: bool) -> dict:
    """Full (unsharded) weights as safetensors plus the ModelSpec (collective over all ranks).

    Each pipeline stage's weights come from its representative rank (dp and tp rank 0). Returns
    the weights file's size and sha256 on rank 0 (hashed while written), {} elsewhere.
    """
    # not cpu_offload=True: with it only global rank 0 receives tensors, and under pipeline
    # parallelism the other stages' weights live elsewhere
    options = StateDictOptions(full_state_dict=True)
    state: dict[str, torch.Tensor] = {}
    for part in parts:
        state.update({k: v.detach().cpu() for k, v in get_model_state_dict(part, options=options).items()})
    if dist.is_initialized() and dist.get_world_size() > 1:
        rank = dist.get_rank()
        gathered: list[dict] | None = [{} for _ in range(dist.get_world_size())] if rank == 0 else None
        dist.gather_object(state if representative else {}, gathered, dst=0)
        state = {}
        for piece in gathered or []:
            state.update(piece)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank != 0:
        return {}
    if model.tie_embeddings:
        state.pop("output.weight", None)  # shared with embeddings.tok_embeddings.weight
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sorted(state.items())}
    digest = write_safetensors(tensors, directory / "model.safetensors", {"format": "pt"})
    atomic_write_json(directory / "config.json", model.model_dump(mode="json"))
    return {f"{directory.name}/model.safetensors": digest}


@skips_when_complete
def run(config: dict) -> None:
    settings = settings_from_config(config)
    rank = int(os.environ.get("RANK", "0"))
    summary = train(settings)
    rt = summary["rt"]
    representative = rt.meshes is None or (rt.meshes["dp"].get_local_rank() == 0 and rt.meshes["tp"].get_local_rank() == 0)
    written = export_final(summary["parts"], settings.model, settings.out_dir / "final", representative)
    if rank == 0:
        mark_success(settings.out_dir, config, outputs=["final"], known=written, steps=summary["steps"],
                     final_loss=summary["final_loss"])
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
