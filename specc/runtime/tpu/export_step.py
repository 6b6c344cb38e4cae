"""Export one SPMD optimizer step of the TPU runtime as StableHLO, for an ahead-of-time libtpu compile.

Step 1 of `specc plan --verify` (and of `benchmarks/tpu_memory_truth.py`), run in the TPU
environment (`.venv-tpu`, torch-xla) on XLA's CPU backend with as many virtual devices as the
target has chips (`CPU_NUM_DEVICES`). It builds the model exactly as the runtime does
(`specc.runtime.tpu.loop.build`: sharded parameters, pinned activation shardings, recompute),
primes AdamW so the step reads and writes its moments (the steady state), traces one micro-batch's
forward (bf16 autocast), backward, clip and AdamW step, and writes `step.mlir` (StableHLO with
GSPMD sharding annotations) and `outputs.json` (each output's sharding and the device count; torch-xla
leaves outputs unannotated, which XLA would read as replicated).

One micro-batch is traced: with gradient accumulation the runtime traces several in one graph,
but the gradients accumulate in place, so the peak is one micro-batch's (the planner's model too).

Usage: `python -m specc.runtime.tpu.export_step CASE_JSON OUT_DIR`, CASE_JSON holding
`{"model": ModelSpec fields, "parallel": ParallelSpec fields, "seq_len": int}`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch_xla
import torch_xla.core.xla_model as xm
from torch_xla.experimental.distributed_checkpoint import prime_optimizer

from specc.runtime.tpu import spmd
from specc.runtime.tpu.loop import apply_recompute, autocast_context, clip_gradients
from specc.runtime.train.loop import cross_entropy
from specc.runtime.train.model import build_model
from specc.runtime.train.optim import build_optimizer
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec


def export(case: dict, out: Path) -> None:
    """Trace the case's optimizer step and write `step.mlir` and `outputs.json` under `out`."""
    spmd.enable_spmd()
    model_spec = ModelSpec(**case["model"])
    parallel = ParallelSpec(**case["parallel"])
    mesh, shape = spmd.build_mesh(parallel)
    model = spmd.to_device(build_model(model_spec, seed=0))
    spmd.shard_parameters(model, mesh)
    spmd.shard_activations(model, mesh)
    apply_recompute(model, parallel.recompute, parallel.recompute_every)
    batch_size = parallel.micro_batch * shape.batch_shards
    schedule = ScheduleSpec(lr=1e-4, seq_len=case["seq_len"], global_batch_size=batch_size, steps=10)
    optimizer = build_optimizer([model], schedule, model_spec, "xla")
    prime_optimizer(optimizer)  # steady state: the step reads and writes the AdamW moments
    optimizer.zero_grad(set_to_none=True)

    tokens = spmd.shard_batch(torch.randint(0, model_spec.vocab_size, (batch_size, case["seq_len"] + 1)), mesh)
    with autocast_context(parallel):
        logits = model(tokens[:, :-1])
    loss = cross_entropy(logits, tokens[:, 1:])
    loss.backward()
    grad_norm = clip_gradients(model, 1.0)
    optimizer.step()
    params = list(model.parameters())
    states = [optimizer.state[p][key] for p in params for key in ("exp_avg", "exp_avg_sq")]
    outputs = [loss, grad_norm, *params, *states]
    shardings = ["{replicated}", "{replicated}"]
    # AdamW's moments are sharded as their parameter (checked: zeros_like keeps the annotation)
    for tensor in params + [p for p in params for _ in range(2)]:
        shardings.append(torch_xla._XLAC._get_xla_sharding_spec(tensor) or "{replicated}")
    (out / "step.mlir").write_text(xm.get_stablehlo(outputs))
    (out / "outputs.json").write_text(json.dumps({"shardings": shardings, "num_devices": shape.num_devices}))


if __name__ == "__main__":
    export(json.loads(sys.argv[1]), Path(sys.argv[2]))
