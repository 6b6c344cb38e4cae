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
    """Compute precisions the runtime trains in on this accelerator, each as the spec names it:
    `fp32` (no autocast), `bf16` (bf16 compute, fp32 master weights), `fp16` (fp16 compute with
    dynamic loss scaling), `fp8` (the blocks' Linear layers as torchao float8 matmuls, the rest
    in bf16). Anything else is refused by validate (R118) and by the runtime itself."""
    sequence_parallel: bool
    """Whether `parallel.sp` shards norm/dropout activations over tp (Korthikanti et al. 2022)."""
    alignment_parallel_axes: frozenset[str] = frozenset({"dp"})
    """Axes the alignment stages (sft, reward model, dpo, ppo) shard over: one process per device on
    every device of the cluster, each model FSDP2-sharded over all of them (ZeRO-3; `dp` only: no
    tensor, pipeline, context or expert parallelism, whatever `parallel` sets for pretraining;
    `specc.runtime.align.distributed`). The constitutional stage generates on one device."""
    alignment_runs: bool = True
    """Whether the alignment stages (sft, reward model, dpo, ppo, constitutional) run on this target.
    They are torch (CUDA or CPU) programs; the TPU runtime is pretraining only (torch-xla SPMD), so
    on a TPU cluster they would run on the hosts' CPUs: validate refuses them there (R267)."""
    alignment_placements: tuple[str, ...] = ("colocated",)
    """Where PPO's four models go: `colocated` (all on every device, `ppo.colocate: true`). The split
    placement (`colocate: false`) is not executed; validate refuses it (R265)."""
    recompute_modes: frozenset[str] = frozenset({"none", "selective", "full"})
    """Activation recomputation modes (`parallel.recompute`) the runtime executes as named. The
    torch runtime has op-level selective recompute (`apply_ac`); torch-xla's checkpoint wraps whole
    blocks, so the TPU runtime has `none` and `full` only."""
    losses: tuple[str, ...] = ("full",)
    """Loss implementations (`parallel.loss`) the runtime executes, preferred first: `auto` runs the
    first. The torch runtime has the chunked head + cross-entropy (`specc.runtime.train.loss`); the
    torch-xla runtime computes the full logits and lets XLA fuse the loss."""

    attention_kernels: tuple[str, ...] = ()
    """Attention kernels (`model.attention_kernel`, besides `auto`) the runtime can pin SDPA to: on CUDA
    the flash (FlashAttention-2) and cuDNN backends of torch's SDPA. A CPU has neither (SDPA runs its own
    CPU flash kernel), XLA lowers attention itself; FlashAttention-3 runs nowhere, since torch's FA3 needs
    the separate flash-attn-3 kernels, which specc does not install."""

    attention_kernel_under_masks: bool = False
    """Whether the runtime pins `model.attention_kernel` where it passes SDPA a mask (ALiBi, sliding windows,
    context parallelism): no, masks need SDPA's memory-efficient or math kernels, so SDPA chooses
    (`Attention._kernel_choice`); validate refuses a named kernel there (R312)."""

    fp8_recipes: tuple[str, ...] = ()
    """torchao float8 recipes (`parallel.fp8_recipe`) the runtime executes under `precision: fp8`: the
    torch runtime's `tensorwise` and `rowwise` (`Float8LinearConfig`). `mxfp8` runs nowhere: torchao
    0.18 (this stack's pin) has no MX training Linear any more (`torchao.prototype.mx_formats` keeps
    the MX casts and an inference workflow; its MX GEMM kernels need sm100 and CUDA 12.8), so
    it is planned only, and only on accelerators with MX tensor cores (`has_mx_tensor_cores`)."""

    pp_schedules: tuple[str, ...] = ("1f1b", "interleaved", "gpipe")
    """Pipeline schedules (`parallel.pp_schedule`) the runtime executes: torch.distributed.pipelining's
    Schedule1F1B, ScheduleInterleaved1F1B and ScheduleGPipe. DeepSeek's `dualpipe` is planned only: it
    needs two copies of each stage's weights and a forward/backward chunk pairing torch's schedules lack."""

    comm_overlaps: tuple[str, ...] = ()
    """Communication overlaps beyond the runtime's own (`parallel.tp_comm_overlap`, `pp_comm_overlap`)
    it executes: none. Transformer Engine's userbuffers TP overlap and Megatron's overlapped pipeline
    sends are planned only, for comparing stacks that run them (benchmarks/plan_vs_published.py)."""

    def alignment_precision(self, requested: str) -> str:
        """The precision the alignment stages compute in for `parallel.precision` = `requested`: fp32
        stays fp32; otherwise bf16 where this runtime trains in bf16 (fp32 master weights, gradient
        reduction and AdamW state), else fp32. Alignment has no fp16 loss scaling and no fp8 path."""
        if requested == "fp32" or "bf16" not in self.precisions:
            return "fp32"
        return "bf16"

    def resolve_loss(self, requested: str) -> str:
        """The loss implementation that runs for `parallel.loss` = `requested` (`auto`: the preferred one)."""
        return resolve_loss(requested, self.losses)

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

TPU_PRECISIONS = frozenset({"fp32", "bf16"})
"""The TPU runtime autocasts to bf16 or runs fp32; it has no fp16 loss scaling and no fp8 path."""

TPU = Capabilities(target="tpu", runtime="pretrain_tpu", parallel_axes=frozenset({"dp", "tp"}),
                   sharded_stages=(0, 3), precisions=TPU_PRECISIONS, sequence_parallel=False,
                   recompute_modes=frozenset({"none", "full"}), alignment_runs=False)
"""The torch-xla SPMD runtime (`specc.runtime.tpu`), the same on every TPU generation."""

TORCH_LOSSES = ("chunked", "full")

TORCH_FP8_RECIPES = ("tensorwise", "rowwise")
"""torchao `Float8LinearConfig` recipes the torch runtime converts Linears with (`Capabilities.fp8_recipes`)."""

TRANSFORMER_ENGINE_FP8_RECIPES = ("delayed", "current")
"""Transformer Engine's per-tensor fp8 recipes (`DelayedScaling`, `Float8CurrentScaling`): planned only,
for the NeMo / Megatron-Core runs the planner is compared with; specc's runtime has no Transformer Engine."""


def resolve_loss(requested: str, losses: tuple[str, ...]) -> str:
    """`parallel.loss` on a runtime that executes `losses` (preferred first): `auto` is the first."""
    return losses[0] if requested == "auto" else requested


def capabilities_for(accelerator: Accelerator) -> Capabilities:
    """The capabilities of specc's runtime on `accelerator` (a catalog entry).

    Precisions: the TPU runtime autocasts to bf16 or runs fp32 (XLA has no fp16 loss scaling or
    fp8 path here). The torch runtime runs fp16 (autocast or FSDP2's fp16 policy, with dynamic
    loss scaling) everywhere, bf16 where the device has it, and fp8 only where torchao's float8
    matmuls run on fp8 tensor cores (the catalog's `fp8`: compute capability 8.9+ or MI300); a
    CPU can execute `torch._scaled_mm` but has no fp8 units, so fp8 there would only be slower.
    """
    if accelerator.kind == "tpu":
        return TPU
    if accelerator.kind == "cpu":
        return Capabilities(target="cpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                            precisions=frozenset({"fp32", "bf16", "fp16"}), sequence_parallel=True,
                            losses=TORCH_LOSSES)
    precisions = {"fp32", "fp16"}
    if accelerator.bf16:
        precisions.add("bf16")
    if accelerator.fp8:
        precisions.add("fp8")
    return Capabilities(target="gpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                        precisions=frozenset(precisions), sequence_parallel=True,
                        losses=TORCH_LOSSES, attention_kernels=("flash2", "cudnn"),
                        fp8_recipes=TORCH_FP8_RECIPES if accelerator.fp8 else ())


def has_mx_tensor_cores(accelerator: Accelerator) -> bool:
    """Whether the accelerator's tensor cores run OCP microscaling (MXFP8) GEMMs natively, block
    scales applied inside the MMA at the fp8 rate: NVIDIA Blackwell (B200, GB200), the catalog's
    `mx_tensor_cores` flag. Hopper has no block-scaled MMA (MXFP8 there would be emulated)."""
    return bool(accelerator.extra.get("mx_tensor_cores", False))


PLANNED_ONLY_MODEL_FEATURES = {
    "mla": "multi-head latent attention (specc's runtime builds MHA/GQA attention only)",
    "mtp_depth": "multi-token prediction modules (specc's runtime trains the next-token head only)",
}
"""Model fields the planner models (parameters, FLOPs, memory, time) for planning published runs, but
no specc runtime builds: validate (R295) rejects them for every target, as it does `attention_kernel:
flash3` (R250) and the deploy stage's `gptq`/`fp8` (R172)."""


def planned_only_features(model: ModelSpec) -> list[tuple[str, str]]:
    """(field, why) for each field of `model` set to something no specc runtime builds
    (`PLANNED_ONLY_MODEL_FEATURES`); empty when the runtime builds the model as written."""
    used = {"mla": model.mla is not None, "mtp_depth": model.mtp_depth > 0}
    return [(name, why) for name, why in PLANNED_ONLY_MODEL_FEATURES.items() if used[name]]


# --- what the deploy stage produces (`specc.runtime.deploy`) -------------------------------

DEPLOY_FORMAT_QUANTIZATIONS = {
    "hf": ("none", "int8", "int4", "gptq"),
    "safetensors": ("none", "int8", "nf4"),
}
"""Weight quantizations the deploy stage writes, per export format.

`hf`: a Hugging Face folder that `transformers`, vLLM and SGLang load without specc; quantized
weights in the compressed-tensors format (`specc.runtime.deploy.compressed`): int8 per output
channel (W8A16), int4 groups by round to nearest (W4A16), or the same int4 layout chosen by GPTQ
on calibration text (`specc.runtime.deploy.gptq`). `safetensors`: specc's own layout (any model,
reloaded only by specc): int8 per channel or NF4 blocks (`specc.runtime.deploy.quantize`).
The spec's enum also names `fp8`, which the planner's serving estimate can size; validate (R172)
rejects it until the runtime produces it."""

HF_QUANTIZED_MOE = ("transformers 5.24's compressed-tensors loader does not read a Mixtral checkpoint whose "
                    "experts stay full precision (its expert merge expects quantized experts)")
"""Why a quantized `hf` export of a mixture-of-experts model is refused (validate's R172 and the export
itself); `quantization: none` and specc's `safetensors` layout export MoE models."""

DEPLOY_QUANTIZATIONS = tuple(dict.fromkeys(q for qs in DEPLOY_FORMAT_QUANTIZATIONS.values() for q in qs))
"""Every quantization some format implements."""

DEPLOY_FORMATS = tuple(DEPLOY_FORMAT_QUANTIZATIONS)
"""Export formats the deploy stage writes (`specc.runtime.deploy.export`); `hf` only for the
models `hf_export_incompatibilities` accepts."""


def hf_export_incompatibilities(model: ModelSpec) -> list[str]:
    """Why `model` cannot be exported as a Hugging Face checkpoint (empty when it can).

    The `hf` export (`specc.runtime.hf.export`) writes Llama, Mistral (a sliding window), Qwen2
    (q/k/v biases) or Mixtral (MoE), as `specc.spec.hf_config.architecture_for` picks; anything
    none of those configs can express is refused. Read by validate (R172) and by the export
    itself, so a spec that validates is one the deploy stage exports.
    """
    moe = model.moe
    checks = [(model.position != "rope", f"position encoding {model.position!r} (HF exports use rope)"),
              (model.norm != "rmsnorm", f"norm {model.norm!r} (HF exports use rmsnorm)"),
              (model.activation != "swiglu", f"activation {model.activation!r} (HF exports use swiglu)"),
              (model.init.mup_base_width is not None, "muP attention and output scaling"),
              (model.qkv_bias and model.sliding_window is not None,
               "q/k/v biases with a sliding window (Qwen2 exports full attention)"),
              (model.qkv_bias and moe is not None, "q/k/v biases in a mixture-of-experts model (Mixtral has none)"),
              (moe is not None and moe.num_shared_experts > 0, "shared experts (Mixtral has none)"),
              (moe is not None and moe.layer_frequency != 1, "dense layers between MoE layers (Mixtral has none)"),
              (moe is not None and moe.first_k_dense > 0, "leading dense layers (Mixtral has none)"),
              (moe is not None and moe.top_k < 2, "top_k 1 (Mixtral renormalises the top-k router weights)")]
    return [reason for failed, reason in checks if failed]


FP8_DIM_MULTIPLE = 16
"""fp8 GEMMs (`torch._scaled_mm`) need both matrix dimensions to be multiples of 16."""


def fp8_linear_converts(in_features: int, out_features: int, tp: int = 1) -> bool:
    """Whether the torch runtime runs a transformer block's Linear of this shape as an fp8 matmul
    under `precision: fp8`: both dimensions, split over `tp` ranks, must stay multiples of 16
    (torchtitan's `module_filter_fn` rule). The output head and MoE routers always stay bf16 (the
    loss and the routing decision are the most precision-sensitive matmuls; torchtitan filters
    `output` and `router.gate` too), and so do the routed experts' grouped GEMMs.
    The planner charges exactly the matmuls this accepts at the fp8 rate.
    """
    return all(dim % (FP8_DIM_MULTIPLE * tp) == 0 for dim in (in_features, out_features))
