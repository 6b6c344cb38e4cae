"""The `pretrain_tpu` stage: the `pretrain` stage's contract, run through torch-xla SPMD.

config.json is the `pretrain` stage's (same params: model, parallel, schedule, devices,
accelerator, predicted), so a spec changes only `cluster.accelerator`. Inputs:
`<run_dir>/tokenize/shards/`. Outputs under `<run_dir>/pretrain/`: `checkpoints/`,
`metrics.jsonl`, `final/{model.safetensors, config.json}`, then `_SUCCESS.json`.

Launch one process per host (`PJRT_DEVICE=TPU python -m specc.runtime config.json`; on
XLA's CPU backend `PJRT_DEVICE=CPU CPU_NUM_DEVICES=4`). On SIGTERM/SIGUSR2 the stage
checkpoints and exits with status 75; rerunning the same config resumes from the newest
complete checkpoint.
"""

from __future__ import annotations


import torch_xla
import torch_xla.runtime as xr

from specc.runtime.infer.weights import write_safetensors
from specc.runtime.io import atomic_write_json, mark_success
from specc.runtime.stages import skips_when_complete
from specc.runtime.tpu import spmd
from specc.runtime.tpu.checkpoint import model_state
from specc.runtime.tpu.loop import train
from specc.runtime.train.stage import settings_from_config


def export_final(model, mesh, directory) -> None:
    """Full (unsharded) weights as safetensors plus the ModelSpec, in the GPU path's format.

    Every host takes part in gathering each tensor (a replicated copy); process 0 writes.
    """
    state = model_state(model)
    replicated = {name: spmd.replicated_copy(tensor, mesh) for name, tensor in state.items()}
    torch_xla.sync()
    if xr.process_index() != 0:
        return
    tensors = {name: tensor.cpu().contiguous() for name, tensor in sorted(replicated.items())}
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(tensors, directory / "model.safetensors", {"format": "pt"})
    atomic_write_json(directory / "config.json", model.spec.model_dump(mode="json"))


@skips_when_complete
def run(config: dict) -> None:
    settings = settings_from_config(config)
    spmd.enable_spmd()  # before anything touches the XLA runtime
    summary = train(settings)
    export_final(summary["model"], summary["mesh"], settings.out_dir / "final")
    if xr.process_index() == 0:
        mark_success(settings.out_dir, config, outputs=["final"], steps=summary["steps"],
                     final_loss=summary["final_loss"])
