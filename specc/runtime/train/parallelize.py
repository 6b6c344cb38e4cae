"""Apply a `ParallelSpec` to the model over a DeviceMesh (torchtitan's order of operations):
pipeline split -> tensor/sequence parallel -> expert parallel -> activation checkpointing
-> torch.compile -> FSDP2 (HSDP when hsdp_replicas > 1).

Mesh axes: pp, dp_replicate, dp_shard_mod_ep, ep, cp, tp (sizes may be 1). Flattened views:
`dp` = every data-parallel rank (batch split), `dp_cp` = dp x cp (loss average), `dp_shard_cp`
= the FSDP shard axis (context-parallel ranks hold different tokens of the same sequences,
so their gradients are averaged like data-parallel ones), `edp` = the replicas of one
expert shard (dp x cp / ep). Expert parallelism is carved out of the FSDP shard axis, as in
torchtitan and Megatron-Core.

Data parallelism always goes through FSDP2: `fsdp: true` or `zero_stage: 3` reshards
parameters after forward (ZeRO-3); otherwise parameters stay gathered between forward and
backward (ZeRO-2 memory, DDP-like traffic).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                               RowwiseParallel, SequenceParallel, parallelize_module)

from specc.runtime.train.model import ContextParallel, Transformer
from specc.runtime.train.moe import GroupedExperts, MoE
from specc.catalog import load_catalog
from specc.spec import parallel_dims
from specc.spec.capabilities import capabilities_for
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.parallel_dims import ParallelDims


def build_mesh(dims: ParallelDims, device_type: str) -> dict[str, DeviceMesh]:
    """The world mesh's axes and its flattened `dp`, `dp_cp`, `dp_shard_cp` and `edp` views (see
    module docstring), kept by name: torch wants flattened meshes bookkept, not re-sliced."""
    names = ("pp", "dp_replicate", "dp_shard_mod_ep", "ep", "cp", "tp")
    shape = (dims.pp, dims.dp_replicate, dims.dp_shard // dims.ep, dims.ep, dims.cp, dims.tp)
    world = init_device_mesh(device_type, shape, mesh_dim_names=names)
    meshes = {name: world[name] for name in ("pp", "dp_replicate", "ep", "cp", "tp")}
    meshes["world"] = world
    meshes["dp"] = world["dp_replicate", "dp_shard_mod_ep", "ep"]._flatten("dp")
    meshes["dp_cp"] = world["dp_replicate", "dp_shard_mod_ep", "ep", "cp"]._flatten("dp_cp")
    meshes["dp_shard_cp"] = world["dp_shard_mod_ep", "ep", "cp"]._flatten("dp_shard_cp")
    meshes["edp"] = world["dp_replicate", "dp_shard_mod_ep", "cp"]._flatten("edp")
    return meshes


# ---------------------------------------------------------------- pipeline parallel

def prune_to_stage(model: Transformer, layers: range, first: bool, last: bool) -> Transformer:
    """A copy of the model keeping only one pipeline chunk; global names are preserved."""
    chunk = copy.deepcopy(model)
    for key in list(chunk.layers.keys()):
        if int(key) not in layers:
            del chunk.layers[key]
    if not first:
        chunk.embeddings = None
    if not last:
        chunk.norm = None
        chunk.output = None
    return chunk


def split_pipeline(model: Transformer, parallel: ParallelSpec, pp_rank: int) -> list[tuple[int, Transformer]]:
    """(stage index, chunk) pairs this pp rank runs."""
    parallel_dims.require(parallel_dims.pipeline_problems(model.spec, parallel.pp, parallel.vpp))
    num_stages = parallel.pp * parallel.vpp
    ranges = parallel_dims.pipeline_layer_ranges(model.spec.num_layers, num_stages)
    return [(s, prune_to_stage(model, ranges[s], s == 0, s == num_stages - 1))
            for s in parallel_dims.stage_ids_for_rank(pp_rank, parallel.pp, parallel.vpp)]


def build_pipeline_schedule(chunks: list[tuple[int, nn.Module]], parallel: ParallelSpec, pp_group,
                            n_microbatches: int, loss_fn, device: torch.device):
    """PipelineStage per chunk and the schedule that drives them (1F1B, GPipe or interleaved 1F1B)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

    num_stages = parallel.pp * parallel.vpp
    stages = [PipelineStage(chunk, index, num_stages, device, group=pp_group) for index, chunk in chunks]
    if parallel.pp_schedule == "interleaved":
        return ScheduleInterleaved1F1B(stages, n_microbatches=n_microbatches, loss_fn=loss_fn)
    schedule_class = ScheduleGPipe if parallel.pp_schedule == "gpipe" else Schedule1F1B
    return schedule_class(stages[0], n_microbatches=n_microbatches, loss_fn=loss_fn)


# ---------------------------------------------------------------- tensor + sequence parallel

def apply_tp(model: Transformer, tp_mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Megatron column/row sharding of attention and dense FFNs; norms sequence-sharded with SP.

    The embedding and head are vocab-sharded unless tied (then replicated over tp, since two
    parallel styles cannot share one parameter); a vocab-sharded head leaves its logits sharded for
    `loss_parallel` (see `vocab_parallel_loss`). MoE FFNs are replicated over tp.
    """
    spec, tp = model.spec, tp_mesh.size()
    parallel_dims.require(parallel_dims.tp_problems(spec, tp))
    activation_layout = Shard(1) if sequence_parallel else Replicate()
    tied = spec.tie_embeddings
    if model.embeddings is not None:
        if not tied:
            parallelize_module(model.embeddings, tp_mesh, {
                "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())})
        if sequence_parallel:
            parallelize_module(model.embeddings, tp_mesh, PrepareModuleOutput(
                output_layouts=Replicate(), desired_output_layouts=Shard(1)))
    if model.norm is not None and sequence_parallel:
        parallelize_module(model.norm, tp_mesh, SequenceParallel())
    if model.output is not None:
        if not tied:
            # Logits stay vocab-sharded (a DTensor): the loss runs under `loss_parallel`, so no rank
            # ever holds the whole vocabulary's logits (Megatron's vocab-parallel cross-entropy).
            parallelize_module(model.output, tp_mesh, ColwiseParallel(
                input_layouts=activation_layout, output_layouts=Shard(-1), use_local_output=False))
        elif sequence_parallel:
            parallelize_module(model.output, tp_mesh, PrepareModuleInput(
                input_layouts=Shard(1), desired_input_layouts=Replicate(), use_local_output=True))
    tp_rank = tp_mesh.get_local_rank()
    for block in model.layers.values():
        plan = {
            "attention": PrepareModuleInput(input_layouts=(activation_layout, None),
                                            desired_input_layouts=(Replicate(), None)),
            "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(), "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=activation_layout),
        }
        if sequence_parallel:
            plan["attention_norm"] = SequenceParallel()
            plan["ffn_norm"] = SequenceParallel()
        if isinstance(block.feed_forward, MoE):
            plan["feed_forward"] = PrepareModuleInput(input_layouts=(activation_layout,),
                                                      desired_input_layouts=(Replicate(),), use_local_output=True)
            if sequence_parallel:
                parallelize_module(block.feed_forward, tp_mesh, PrepareModuleOutput(
                    output_layouts=Replicate(), desired_output_layouts=Shard(1)))
        else:
            plan["feed_forward"] = PrepareModuleInput(input_layouts=(activation_layout,),
                                                      desired_input_layouts=(Replicate(),))
            plan["feed_forward.w1"] = ColwiseParallel()
            plan["feed_forward.w2"] = RowwiseParallel(output_layouts=activation_layout)
            if block.feed_forward.w3 is not None:
                plan["feed_forward.w3"] = ColwiseParallel()
        parallelize_module(block, tp_mesh, plan)
        block.attention.head_offset = tp_rank * (spec.num_heads // tp)


def vocab_parallel_loss(model: ModelSpec, tp: int):
    """The context the loss and its backward run in: torch's `loss_parallel` when the head's logits
    are vocab-sharded DTensors (tp > 1, untied), else nothing."""
    if tp > 1 and not model.tie_embeddings:
        from torch.distributed.tensor.parallel import loss_parallel

        return loss_parallel()
    return nullcontext()


# ---------------------------------------------------------------- context parallel

def apply_cp(model: Transformer, cp_mesh: DeviceMesh, load_balance: bool) -> ContextParallel:
    """Give attention and embeddings the context-parallel group (see `ContextParallel`)."""
    cp = ContextParallel(cp_mesh.get_group(), cp_mesh.get_local_rank(), cp_mesh.size(), load_balance)
    if model.embeddings is not None:
        model.embeddings.cp = cp
    for block in model.layers.values():
        block.attention.cp = cp
    return cp


# ---------------------------------------------------------------- expert parallel

def apply_ep(model: Transformer, ep_mesh: DeviceMesh) -> None:
    """Shard each MoE layer's experts over `ep` (DTensor Shard(0)); tokens move by all-to-all."""
    for block in model.layers.values():
        moe = block.feed_forward
        if not isinstance(moe, MoE):
            continue
        if moe.num_experts % ep_mesh.size():
            raise ValueError(f"num_experts ({moe.num_experts}) is not divisible by ep ({ep_mesh.size()})")
        for name, param in list(moe.experts.named_parameters(recurse=False)):
            sharded = nn.Parameter(distribute_tensor(param.data, ep_mesh, [Shard(0)]))
            setattr(moe.experts, name, sharded)
        moe.ep_group = ep_mesh.get_group()
        moe.ep_size = ep_mesh.size()


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Expert weights sharded over `ep` and kept out of the dense FSDP units: whole on every replica
    when no expert-dp sharding applies (`sync_expert_grads` averages them); empty once
    `apply_expert_fsdp` has given the experts their own FSDP unit."""
    return [p for m in model.modules() if isinstance(m, MoE) and m.ep_size > 1 and not m.experts_sharded
            for p in m.experts.parameters()]


def sync_expert_grads(model_parts: list[nn.Module], edp_mesh: DeviceMesh | None, dp: int) -> None:
    """Expert grads hold the sum of every rank's contribution routed to this shard; the dense
    gradients are FSDP's average over dp x cp. Unsharded experts: add the other replicas (edp) and
    divide by dp x cp. Experts with their own FSDP unit: FSDP already averaged them over edp, so
    rescale by edp / (dp x cp) (a reduce-scatter divide factor would need PREMUL_SUM, which gloo lacks)."""
    for part in model_parts:
        for moe in [m for m in part.modules() if isinstance(m, MoE) and m.ep_size > 1]:
            for param in moe.experts.parameters():
                if param.grad is None:
                    continue
                local = param.grad.to_local() if isinstance(param.grad, DTensor) else param.grad
                if moe.experts_sharded:
                    local.mul_(edp_mesh.size() / dp)
                    continue
                if edp_mesh is not None and edp_mesh.size() > 1:
                    dist.all_reduce(local, group=edp_mesh.get_group())
                local.div_(dp)


# ---------------------------------------------------------------- activation checkpointing, compile

def _save_matmuls_policy(ctx, op, *args, **kwargs):
    """Selective recompute: keep matmul and attention outputs, recompute cheap pointwise ops
    (Korthikanti et al. 2022 recompute the memory-heavy, FLOP-light parts)."""
    from torch.utils.checkpoint import CheckpointPolicy

    saved = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default,
             torch.ops.aten._scaled_dot_product_flash_attention.default,
             torch.ops.aten._scaled_dot_product_efficient_attention.default,
             torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}
    return CheckpointPolicy.MUST_SAVE if op in saved else CheckpointPolicy.PREFER_RECOMPUTE


def _alternate_matmuls_contexts():
    """torchtitan's op-level selective policy (`selective_ac_option: op`): keep attention outputs and
    every other matmul output (the 1st, 3rd, ... of each block's forward, counted separately in the
    recompute pass), recompute the rest. A fresh counter per checkpointed block call."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    counts = {"forward": 0, "recompute": 0}
    matmuls = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}
    attention = {torch.ops.aten._scaled_dot_product_flash_attention.default,
                 torch.ops.aten._scaled_dot_product_efficient_attention.default,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default}

    def policy(ctx, op, *args, **kwargs):
        if op in matmuls:
            key = "recompute" if ctx.is_recompute else "forward"
            counts[key] += 1
            return CheckpointPolicy.MUST_SAVE if counts[key] % 2 == 1 else CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if op in attention else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def apply_ac(model: Transformer, mode: str, selective_policy: str = "matmuls", every: int = 1) -> list[int]:
    """Wrap blocks for recompute; checkpoint FQNs stay clean (DCP strips the wrapper prefix).
    `selective_policy` picks what `selective` keeps (spec `parallel.selective_policy`); under `full`,
    `every` = n wraps only every n-th block by its model-wide id (`parallel_dims.is_recomputed_layer`,
    torchtitan's layer SAC), so a pipeline stage recomputes the same blocks as the whole model would.
    Returns the ids of the wrapped blocks (what the planner charges)."""
    if mode == "none":
        return []
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    wrapped_ids = []
    for key, block in list(model.layers.items()):
        if mode == "full" and not parallel_dims.is_recomputed_layer(int(key), every):
            continue
        if mode == "full":
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False)
        elif selective_policy == "alternate_matmuls":
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False, context_fn=_alternate_matmuls_contexts)
        else:
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False,
                                         context_fn=partial(create_selective_checkpoint_contexts, _save_matmuls_policy))
        model.layers[key] = wrapped
        wrapped_ids.append(int(key))
    return wrapped_ids


def apply_compile(model: Transformer) -> None:
    """Compile each block in place (names unchanged; repeated blocks share one compiled graph)."""
    for block in model.layers.values():
        block.compile()


# ---------------------------------------------------------------- FSDP2 / HSDP

def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, reshard_after_forward: bool,
               param_dtype: torch.dtype | None, expert_mesh: DeviceMesh | None = None) -> None:
    """fully_shard per block, then the root (embedding, final norm, head); ep-sharded experts first
    get their own FSDP unit over `expert_mesh` (the expert-dp ranks), as torchtitan does."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if expert_mesh is not None and expert_mesh.size() > 1:
        apply_expert_fsdp(model, expert_mesh, reshard_after_forward, mp_policy)
    ignored = set(expert_parameters(model))
    placement = _expert_shard_placement(model, dp_mesh.size(dp_mesh.ndim - 1))
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy,
                    ignored_params=ignored or None, shard_placement_fn=placement)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy,
                ignored_params=ignored or None, shard_placement_fn=placement)


def apply_expert_fsdp(model: Transformer, edp_mesh: DeviceMesh, reshard_after_forward: bool, mp_policy) -> None:
    """Shard each MoE's ep-sharded experts over the expert-dp ranks too (without it every replica
    holds its ep shard whole: weights, gradients and AdamW state); `sync_expert_grads` rescales
    their gradients to the dense ones' average."""
    from torch.distributed.fsdp import fully_shard

    for moe in [m for m in model.modules() if isinstance(m, MoE) and m.ep_size > 1]:
        local_experts = moe.num_experts // moe.ep_size
        uneven = local_experts % edp_mesh.size() != 0
        fully_shard(moe.experts, mesh=edp_mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy,
                    shard_placement_fn=(lambda param: Shard(1)) if uneven else None)
        moe.experts_sharded = True


def _expert_shard_placement(model: Transformer, shard_size: int):
    """FSDP placement for stacked expert weights [experts, in, out]: FSDP2 shards dim 0 and pads it
    when the experts do not divide the shard group (4 experts over 8 ranks: each rank holds a whole
    expert, twice its share), so those shard on dim 1 instead (torchtitan does the same)."""
    stacked = {id(p) for m in model.modules() if isinstance(m, GroupedExperts) for p in m.parameters()}

    def placement(param: nn.Parameter) -> Shard | None:
        if id(param) in stacked and param.shape[0] % shard_size:
            return Shard(1)
        return None  # FSDP's default, Shard(0)

    return placement


def fsdp_mesh(meshes: dict[str, DeviceMesh], dims: ParallelDims) -> DeviceMesh:
    """2-D (replicate, shard x cp) mesh for HSDP, else the 1-D shard x cp mesh."""
    if dims.dp_replicate > 1:
        return meshes["world"]["dp_replicate", "dp_shard_cp"]
    return meshes["dp_shard_cp"]


def param_dtype_for(precision: str) -> torch.dtype | None:
    """FSDP2's parameter dtype for the compute precision (`precision.compute_dtype`): float16 for
    fp16, bf16 for bf16 and fp8 (fp8 casts inside its Linear layers), None (no cast) for fp32."""
    from specc.runtime.train.precision import compute_dtype

    return compute_dtype(precision)


def check_model_fits_layout(model: ModelSpec, parallel: ParallelSpec, dims: ParallelDims, seq_len: int,
                            accelerator: str) -> None:
    """Every layout rule validate applies (`specc.spec.parallel_dims`), again at start-up: a config
    edited by hand, or a spec that skipped validate, fails here with the same message."""
    entry = load_catalog().get(accelerator)
    capabilities = capabilities_for(entry) if entry is not None else None
    parallel_dims.require(parallel_dims.layout_problems(model, parallel, dims, seq_len, capabilities))
    refuse_planned_only(parallel, capabilities)


def refuse_planned_only(parallel: ParallelSpec, capabilities) -> None:
    """The planned-only parallel knobs validate refuses (R310, R311), again at start-up: this runtime has
    no userbuffers TP overlap, no overlapped pipeline sends and no DualPipe, and would otherwise run
    something other than the config says."""
    if capabilities is None:
        return
    asked = [name for name in ("tp_comm_overlap", "pp_comm_overlap")
             if getattr(parallel, name) and name not in capabilities.comm_overlaps]
    if parallel.pp_schedule not in capabilities.pp_schedules:
        asked.append(f"pp_schedule: {parallel.pp_schedule}")
    if asked:
        raise ValueError(f"{', '.join(asked)}: planned only, specc's {capabilities.runtime} runtime does not run it "
                         f"(validate's R310/R311)")
