"""Run by tests/hf/test_hf_sharded_load.py under torchrun (2 gloo ranks): for each (directory,
layout) given, build the model on the meta device, parallelize it (FSDP2 over dp, or TP), load the
HF directory into each rank's shards, and write the logits and the bytes this rank read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from specc.runtime.hf.load import hf_model_spec, materialize_from_hf, meta_model
from specc.runtime.train import parallelize as par


def load_and_run(directory: Path, layout: str, out: Path, rank: int) -> None:
    spec = hf_model_spec(directory)
    model = meta_model(spec)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    if layout == "tp":
        par.apply_tp(model, mesh, sequence_parallel=False)
    else:
        par.apply_fsdp(model, mesh, reshard_after_forward=True, param_dtype=None)
    stats = materialize_from_hf(model, directory, "cpu", spec)
    stats["tied"] = model.output.weight is model.embeddings.tok_embeddings.weight
    tokens = torch.randint(0, spec.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.eval()(tokens)
    if hasattr(logits, "full_tensor"):
        logits = logits.full_tensor()
    torch.save(logits, out / f"logits-{rank}.pt")
    (out / f"stats-{rank}.json").write_text(json.dumps(stats))


def main(*cases: str) -> None:
    """cases: DIRECTORY LAYOUT OUT_DIR, repeated."""
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    for index in range(0, len(cases), 3):
        directory, layout, out = cases[index:index + 3]
        load_and_run(Path(directory), layout, Path(out), dist.get_rank())
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
