"""Planner memory vs torch's FSDPMemTracker on fake tensors, using specc's own runtime model.

For each config (sizes, batch, recompute policies, norms, attention, FSDP sizes 2-64, tensor
parallelism 2-4 with and without sequence parallelism), specc's `Transformer` is built, wrapped with
the runtime's own `apply_tp`, `apply_ac` and `apply_fsdp` (FSDP2, bf16 params, fp32 reduce) over a
fake process group, and trained for two steps (on fake tensors; TP configs on real tensors, see
`trace`) inside FSDPMemTracker (AdamW with foreach=False, as ../shared/notes/torch-on-cpu.md
advises). The tracker's peak of the
second step is compared with the planner's allocated memory (its total without the CUDA-context
reserve and fragmentation allowance), component by component. The loss runs as the runtime's
`next_token_loss` runs `parallel.loss`: the configs' own (`full`, or `chunked` for the `chunked-*`
configs), or `--loss chunked` for every config that names none:

  states       sharded params + optimizer state (at the peak)      vs planner params + optimizer
  activations  activation memory per layer (two depths differenced) vs planner per-layer activations
  peak         tracker peak total                                  vs planner allocated total

Traced on CPU (dtype rules as on GPU under FSDP mixed precision; sdpa maps to the CPU flash kernel).
This benchmark imports torch; `specc plan` does not. Run: .venv/bin/python benchmarks/plan_vs_tracker.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker, _FSDPModState  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: E402

from specc.catalog import load_catalog  # noqa: E402
from specc.plan.layout import Layout, hardware_for  # noqa: E402
from specc.plan.layout import compute_element_bytes  # noqa: E402
from specc.plan.memory import activation_bytes_per_layer, pipeline_stage_memory  # noqa: E402
from specc.plan.params import count_parameters  # noqa: E402
from specc.runtime.train.model import Transformer  # noqa: E402
from specc.runtime.train.loop import next_token_loss  # noqa: E402
from specc.runtime.train.parallelize import (apply_ac, apply_ep, apply_fsdp, apply_tp,  # noqa: E402
                                             build_mesh, fsdp_mesh, param_dtype_for, vocab_parallel_loss)
from specc.spec.model import ModelSpec  # noqa: E402
from specc.spec.parallel_dims import ParallelDims  # noqa: E402

WORLD = 8
"""FSDP size of every config that names none."""
MiB = 2**20

# (name, model kwargs, micro_batch, seq_len, recompute[, mesh]): sizes, batch, recompute, norms,
# attention, FSDP sizes, tensor and sequence parallelism; MoE-free. The mesh is {"dp": FSDP size,
# "tp": tensor-parallel size, "sp": sequence parallelism}, default FSDP over WORLD ranks. Recompute "selective-alternate" is `selective` with
# `selective_policy: alternate_matmuls` (torchtitan's op-level policy).
BASE = dict(hidden_size=1024, num_heads=16, num_kv_heads=4, ffn_hidden_size=2816, vocab_size=32000, max_seq_len=2048)
CONFIGS = [
    ("base", {}, 2, 1024, "none"),
    ("base-selective", {}, 2, 1024, "selective"),
    ("base-full", {}, 2, 1024, "full"),
    ("base-mb4", {}, 4, 1024, "none"),
    ("base-mb1-seq2048", {}, 1, 2048, "none"),
    ("base-mb4-full", {}, 4, 1024, "full"),
    ("gelu", {"activation": "gelu"}, 2, 1024, "none"),
    ("gelu-selective", {"activation": "gelu"}, 2, 1024, "selective"),
    ("layernorm-learned", {"norm": "layernorm", "position": "learned", "activation": "gelu"}, 2, 1024, "none"),
    ("mha", {"num_kv_heads": 16}, 2, 1024, "none"),
    ("mqa", {"num_kv_heads": 1}, 2, 1024, "none"),
    ("tied", {"tie_embeddings": True}, 2, 1024, "none"),
    ("eager", {"attention": "eager"}, 2, 512, "none"),
    ("eager-selective", {"attention": "eager"}, 2, 512, "selective"),
    ("wide", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 1, 1024, "none"),
    ("wide-full", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 2, 1024, "full"),
    ("wide-selective", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 2, 1024, "selective"),
    ("narrow", {"hidden_size": 512, "num_heads": 8, "num_kv_heads": 2, "ffn_hidden_size": 1408}, 4, 1024, "none"),
    ("big-vocab", {"vocab_size": 128256}, 1, 1024, "none"),
    ("big-vocab-full", {"vocab_size": 128256}, 2, 1024, "full"),
    ("head-dim-128", {"num_heads": 8, "num_kv_heads": 2}, 2, 1024, "none"),
    ("base-alternate", {}, 2, 1024, "selective-alternate"),
    ("gelu-alternate", {"activation": "gelu"}, 2, 1024, "selective-alternate"),
    ("wide-alternate", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 2, 1024, "selective-alternate"),
    ("fsdp2", {}, 2, 1024, "none", {"dp": 2}),
    ("fsdp32", {}, 2, 1024, "none", {"dp": 32}),
    ("wide-fsdp2", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 1, 1024, "none", {"dp": 2}),
    ("wide-selective-fsdp64", {"hidden_size": 2048, "num_heads": 16, "ffn_hidden_size": 5632}, 2, 1024, "selective",
     {"dp": 64}),
    ("moe", {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_hidden_size": 1408}}, 2, 1024, "none"),
    ("moe-selective", {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_hidden_size": 1408}}, 2, 1024, "selective"),
    ("moe-ep2", {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_hidden_size": 1408}}, 2, 1024, "none",
     {"dp": 8, "ep": 2}),
    ("zero2", {}, 2, 1024, "none", {"dp": 8, "zero": 2}),
    ("fp32", {}, 2, 1024, "none", {"precision": "fp32"}),
    ("fp32-selective", {}, 2, 1024, "selective", {"precision": "fp32"}),
    ("fp32-full", {}, 2, 1024, "full", {"precision": "fp32"}),
    ("fp32-eager-gelu", {"attention": "eager", "activation": "gelu"}, 2, 512, "none", {"precision": "fp32"}),
    ("tp2", {}, 2, 1024, "none", {"dp": 4, "tp": 2}),
    ("tp4-sp", {}, 2, 1024, "none", {"dp": 2, "tp": 4, "sp": True}),
    ("tp2-sp-selective", {}, 2, 1024, "selective", {"dp": 4, "tp": 2, "sp": True}),
    ("tp2-sp-full", {}, 2, 1024, "full", {"dp": 4, "tp": 2, "sp": True}),
    ("tp2-sp-tied", {"tie_embeddings": True}, 2, 1024, "none", {"dp": 4, "tp": 2, "sp": True}),
    # `parallel.loss: chunked` (specc/runtime/train/loss.py): the head + cross-entropy chunk by chunk
    ("chunked-base", {}, 2, 1024, "none", {"loss": "chunked"}),
    ("chunked-big-vocab", {"vocab_size": 128256}, 1, 1024, "none", {"loss": "chunked"}),
    ("chunked-big-vocab-mb2", {"vocab_size": 128256}, 2, 1024, "none", {"loss": "chunked", "chunk": 512}),
    ("chunked-full", {"vocab_size": 128256}, 2, 1024, "full", {"loss": "chunked"}),
    ("chunked-selective", {}, 2, 1024, "selective", {"loss": "chunked"}),
    ("chunked-zero2", {}, 2, 1024, "none", {"dp": 8, "zero": 2, "loss": "chunked"}),
    ("chunked-fp32", {}, 2, 1024, "none", {"precision": "fp32", "loss": "chunked"}),
    ("chunked-tied", {"tie_embeddings": True}, 2, 1024, "none", {"loss": "chunked"}),
    ("chunked-fsdp2", {}, 2, 1024, "none", {"dp": 2, "loss": "chunked"}),
    ("chunked-tp2-sp", {}, 2, 1024, "none", {"dp": 4, "tp": 2, "sp": True, "loss": "chunked"}),
]


def trace(spec: ModelSpec, micro_batch: int, seq_len: int, recompute: str, meshes: dict, sp: bool,
          reshard: bool = True, param_dtype: torch.dtype | None = torch.bfloat16, loss: str = "full",
          chunk_tokens: int = 1024) -> dict:
    """Snapshots of the second step: the peak, and the moment before backward starts. The loss runs as
    the runtime runs `parallel.loss` (`next_token_loss`: the chunked head, or logits + cross-entropy)."""
    tp = meshes["tp"].size() if "tp" in meshes else 1
    # Fake tensors cannot trace TP (FSDP indexes the real 2-D mesh; torch's loss_parallel backward then
    # reports 8 B per *full-vocabulary* logit whatever tp is, real tensors 12 B per local one) nor MoE
    # routing (data-dependent shapes): those run on real tensors, this rank's shards only (the fake
    # group's collectives move no data), the model built on the meta device and materialised after
    # parallelisation (../shared/notes/torch-on-cpu.md).
    real = tp > 1 or spec.moe is not None  # (expert parallelism implies MoE)
    if real:
        with torch.device("meta"):
            model = Transformer(spec)
        model.set_loss(loss, chunk_tokens)
        if tp > 1:
            apply_tp(model, meshes["tp"], sp)
        if "ep" in meshes:
            apply_ep(model, meshes["ep"])
        apply_ac(model, *recompute_and_policy(recompute))
        apply_fsdp(model, meshes["dp"], reshard, param_dtype, expert_mesh=meshes.get("edp"))
    with nullcontext() if real else FakeTensorMode():
        if real:
            materialise(model, spec)
        else:
            model = Transformer(spec)
            model.set_loss(loss, chunk_tokens)
            apply_ac(model, *recompute_and_policy(recompute))
            apply_fsdp(model, meshes["dp"], reshard, param_dtype)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False, fused=False)
        tracker = FSDPMemTracker(model, optimizer)
        with tracker:
            for step in range(2):
                tokens = torch.randint(0, spec.vocab_size, (micro_batch, seq_len))
                chunked = model.loss_chunk_tokens is not None
                # the runtime's loss; the full logits' vocab-parallel under TP
                with nullcontext() if chunked else vocab_parallel_loss(spec, tp):
                    next_token_loss(model, tokens, tokens, chunked).backward()
                optimizer.step()
                optimizer.zero_grad()
                if step == 0:
                    tracker.reset_mod_stats()
        peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
        before_backward = next(iter(tracker.memory_tracking[model].snapshots[_FSDPModState.BEF_PRE_BW][-1].values()))
    name = lambda key: str(key).rsplit(".", 1)[-1]  # noqa: E731
    return {"peak": {name(k): v for k, v in peak.items()}, "before_backward": {name(k): v for k, v in before_backward.items()}}


@torch.no_grad()
def materialise(model: Transformer, spec: ModelSpec) -> None:
    """Meta-device model -> real CPU tensors: random weights (routing needs finite logits) and the
    buffers (RoPE tables) of a freshly built model."""
    buffers = dict(Transformer(spec).named_buffers())
    model.to_empty(device="cpu")
    for param in model.parameters():
        (param.to_local() if isinstance(param, DTensor) else param).normal_(0.0, 0.02)
    for name, buffer in model.named_buffers():
        buffer.copy_(buffers[name])


def recompute_and_policy(recompute: str) -> tuple[str, str]:
    return ("selective", "alternate_matmuls") if recompute == "selective-alternate" else (recompute, "matmuls")


def mesh_of(config) -> tuple[int, int, bool, int]:
    """(FSDP size, tp, sp, ep) of a config."""
    mesh = config[5] if len(config) > 5 else {}
    return mesh.get("dp", WORLD), mesh.get("tp", 1), mesh.get("sp", False), mesh.get("ep", 1)


def build_meshes(dp: int, tp: int, ep: int) -> dict:
    """The meshes trace() needs: the runtime's own mesh builder when experts are sharded."""
    if ep > 1:
        dims = ParallelDims(dp_replicate=1, dp_shard=dp, tp=tp, ep=ep)
        meshes = build_mesh(dims, "cpu")
        return {"dp": fsdp_mesh(meshes, dims), "ep": meshes["ep"], "edp": meshes["edp"],
                **({"tp": meshes["tp"]} if tp > 1 else {})}
    if tp > 1:
        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("dp", "tp"))
        return {"dp": mesh["dp"], "tp": mesh["tp"]}
    return {"dp": init_device_mesh("cpu", (dp,))}


def compare(config, meshes, default_loss: str = "full") -> dict:
    label, overrides, micro_batch, seq_len, recompute = config[:5]
    dp, tp, sp, ep = mesh_of(config)
    options = config[5] if len(config) > 5 else {}
    # ZeRO-1/2 run as FSDP that keeps parameters gathered from forward to backward (the runtime's rule)
    zero = options.get("zero", 3)
    precision = options.get("precision", "bf16")
    loss, chunk_tokens = options.get("loss", default_loss), options.get("chunk", 1024)
    param_dtype = param_dtype_for(precision)
    results = {}
    for layers in (2, 4):
        spec = ModelSpec(num_layers=layers, **{**BASE, **overrides})
        results[layers] = (spec, trace(spec, micro_batch, seq_len, recompute, meshes, sp, reshard=zero == 3,
                                       param_dtype=param_dtype, loss=loss, chunk_tokens=chunk_tokens))
    spec, traced = results[4]
    recompute, policy = recompute_and_policy(recompute)
    layout = Layout(dp=dp, tp=tp, sp=sp, ep=ep, fsdp=zero == 3, zero_stage=0 if zero == 3 else zero,
                    micro_batch=micro_batch, grad_accum=1, recompute=recompute, selective_policy=policy,
                    precision=precision, loss=loss, loss_chunk_tokens=chunk_tokens)
    hardware = hardware_for(load_catalog()["h100-sxm"], dp * tp, 8, precision)
    planned = pipeline_stage_memory(spec, count_parameters(spec), layout, hardware, seq_len, "only")
    peak = traced["peak"]
    # Sharded gradients are freed by zero_grad(set_to_none) and only partly alive at the peak: compare
    # weights + optimizer state, which live throughout.
    tracker_states = peak["SHARDED_PARAM"] + peak["OPT"]
    if zero < 3:  # the gathered 16-bit weights are part of ZeRO-1/2's model states (Megatron's 2 B/param)
        tracker_states += peak.get("UNSHARDED_PARAM", 0)
    planner_states = planned.params + planned.optimizer
    per_layer_tracker = (traced["before_backward"]["ACT"] - results[2][1]["before_backward"]["ACT"]) / 2
    if recompute == "full":
        # the checkpointed layer input (sequence-sharded under SP)
        per_layer_planner = compute_element_bytes(layout) * micro_batch * seq_len * spec.hidden_size / (tp if sp else 1)
    else:
        per_layer_planner = activation_bytes_per_layer(spec, layout, seq_len, spec.moe is not None)
    allocated = planned.total - planned.reserve
    if loss != "full" and "loss" not in options:
        label += f" ({loss})"
    return {"config": label, "states": (planner_states, tracker_states), "activations": (per_layer_planner, per_layer_tracker),
            "peak": (allocated, peak["Total"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only these configs (by name)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (bytes)")
    parser.add_argument("--loss", choices=("full", "chunked"), default="full",
                        help="`parallel.loss` of the configs that name none (default: full, the configs' "
                             "historical loss; the `chunked-*` configs always run chunked)")
    args = parser.parse_args()
    start = time.perf_counter()
    chosen = [c for c in CONFIGS if not args.only or c[0] in args.only]
    rows = []
    groups = sorted({(dp, tp, ep) for dp, tp, _, ep in map(mesh_of, chosen)})
    for dp, tp, ep in groups:
        dist.init_process_group("fake", rank=0, world_size=dp * tp, store=FakeStore())
        meshes = build_meshes(dp, tp, ep)
        rows += [compare(config, meshes, args.loss) for config in chosen
                 if (mesh_of(config)[0], mesh_of(config)[1], mesh_of(config)[3]) == (dp, tp, ep)]
        dist.destroy_process_group()
    rows.sort(key=lambda row: [c[0] for c in chosen].index(row["config"].split(" (")[0]))
    if args.json:
        print(json.dumps(rows))
        return
    meshes = sorted({f"fsdp{dp}" + (f"xtp{tp}" if tp > 1 else "") + (f"/ep{ep}" if ep > 1 else "")
                     for dp, tp, _, ep in map(mesh_of, chosen)})
    print(f"{len(rows)} configs, meshes {', '.join(meshes)}, traced in {time.perf_counter() - start:.0f} s\n")
    print(f"{'config':20} {'states MiB (plan/trk)':>24} {'act/layer MiB (plan/trk)':>26} {'peak MiB (plan/trk)':>22}")
    errors = {"states": [], "activations": [], "peak": []}
    for row in rows:
        cells = []
        for part in ("states", "activations", "peak"):
            planned, measured = row[part]
            errors[part].append(abs(planned / measured - 1) * 100)
            cells.append(f"{planned / MiB:9.1f}/{measured / MiB:9.1f} {planned / measured - 1:+5.1%}")
        print(f"{row['config']:20} " + "  ".join(cells))
    print()
    for part, values in errors.items():
        print(f"{part:12} median |error| {statistics.median(values):5.1f}%   mean {statistics.fmean(values):5.1f}%   "
              f"max {max(values):5.1f}%")


if __name__ == "__main__":
    main()
