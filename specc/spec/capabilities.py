"""What specc's runtimes execute on each kind of target, in one torch-free place.

Why a module of its own: validate, the layout search, the planner and the bundle emitter must
agree with the runtime about what can run. Each of them asks this module ("can the TPU runtime
pipeline?", "which precisions train on a V100?") instead of keeping its own list, so a spec
that validates is one the runtime accepts, and the search never proposes what a runtime refuses.

Targets, by the accelerator's catalog `kind`:
- `cpu`: specc's torch runtime on CPU processes (gloo); every parallel axis runs, slowly.
- `gpu`: the same torch runtime on CUDA/ROCm devices (NCCL): FSDP2, TP/SP, PP, CP, EP.
- `tpu`: the torch-xla SPMD runtime (`specc.runtime.tpu`): data, fsdp and tensor axes only.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.catalog import Accelerator
from specc.spec.model import ModelSpec


@dataclass(frozen=True)
class Capabilities:
    """What one runtime executes on one accelerator type."""

    target: str
    """`cpu`, `gpu` or `tpu` (the catalog kind)."""
    runtime: str
    """The stage that trains: `pretrain` (torch) or `pretrain_tpu` (torch-xla SPMD)."""
    parallel_axes: frozenset[str]
    """Axes that may have a degree above 1 (`dp` always can)."""
    sharded_stages: tuple[int, ...]
    """ZeRO stages the runtime executes as written when data-parallel ranks exist. Others run
    as the next stage up (see `effective_zero_stage`)."""
    precisions: frozenset[str]
    """Compute precisions the runtime trains in on this accelerator."""
    sequence_parallel: bool
    """Whether `parallel.sp` shards norm/dropout activations over tp (Korthikanti et al. 2022)."""
    alignment_devices: int = 1
    """Devices an alignment stage (sft, reward model, dpo, ppo, constitutional) runs on: one
    process on one device holding every model of the stage (specc/runtime/align/trainer.py)."""
    alignment_precision: str = "fp32"
    """Precision of the alignment stages: models are built in fp32 (`build_model`) and trained
    without autocast, whatever `parallel.precision` says."""

    def supports_axis(self, axis: str) -> bool:
        return axis == "dp" or axis in self.parallel_axes

    def effective_zero_stage(self, zero_stage: int, fsdp: bool, shard_ranks: int) -> int:
        """The ZeRO stage the runtime really runs for a requested (zero_stage, fsdp) over
        `shard_ranks` data-parallel ranks (1 rank: nothing to shard, stage 0).

        torch runtime: data parallelism always goes through FSDP2; without resharding after
        forward (zero_stage 0-2) that is ZeRO-2 (gradients and optimizer state sharded,
        parameters gathered for forward and backward), with it (fsdp or zero_stage 3) ZeRO-3.
        TPU runtime: GSPMD all-gathers a weight where it is used, so any sharding is stage 3.
        """
        if shard_ranks <= 1:
            return 0
        wanted = 3 if fsdp else zero_stage
        for stage in self.sharded_stages:
            if stage >= wanted:
                return stage
        return self.sharded_stages[-1]


TORCH_AXES = frozenset({"dp", "tp", "pp", "cp", "ep"})

TPU = Capabilities(target="tpu", runtime="pretrain_tpu", parallel_axes=frozenset({"dp", "tp"}),
                   sharded_stages=(0, 3), precisions=frozenset({"fp32", "bf16"}), sequence_parallel=False)
"""The torch-xla SPMD runtime (`specc.runtime.tpu`), the same on every TPU generation."""


def capabilities_for(accelerator: Accelerator) -> Capabilities:
    """The capabilities of specc's runtime on `accelerator` (a catalog entry)."""
    if accelerator.kind == "tpu":
        return TPU
    if accelerator.kind == "cpu":
        return Capabilities(target="cpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                            precisions=frozenset({"fp32", "bf16"}), sequence_parallel=True)
    precisions = {"fp32", "fp16"}
    if accelerator.bf16:
        precisions.add("bf16")
    if accelerator.fp8:
        precisions.add("fp8")
    return Capabilities(target="gpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                        precisions=frozenset(precisions), sequence_parallel=True)


# --- what the deploy stage produces (`specc.runtime.deploy`) -------------------------------

DEPLOY_QUANTIZATIONS = ("none", "int8", "nf4")
"""Weight quantizations the deploy stage implements (`specc.runtime.deploy.quantize`): int8 per
output channel and NF4 blocks. The spec's enum also names `gptq` and `fp8`, which the planner's
serving estimate can size; validate (R172) rejects them until the runtime produces them."""

DEPLOY_FORMATS = ("hf", "safetensors")
"""Export formats the deploy stage writes (`specc.runtime.deploy.export`); `hf` only for the
models `hf_export_incompatibilities` accepts."""


def hf_export_incompatibilities(model: ModelSpec) -> list[str]:
    """Why `model` cannot be exported as a Hugging Face LlamaForCausalLM (empty when it can).

    The `hf` export renames specc's dense RoPE/RMSNorm/SwiGLU weights to Llama's; anything
    Llama's config cannot express is refused. Read by validate (R172) and by the export itself,
    so a spec that validates is one the deploy stage exports.
    """
    checks = [(model.moe is not None, "mixture-of-experts layers"),
              (model.position != "rope", f"position encoding {model.position!r} (Llama uses rope)"),
              (model.norm != "rmsnorm", f"norm {model.norm!r} (Llama uses rmsnorm)"),
              (model.activation != "swiglu", f"activation {model.activation!r} (Llama uses swiglu)"),
              (model.sliding_window is not None, "a sliding attention window"),
              (model.init.mup_base_width is not None, "muP attention and output scaling")]
    return [reason for failed, reason in checks if failed]
