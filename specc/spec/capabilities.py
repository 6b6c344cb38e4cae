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
    losses: tuple[str, ...] = ("full",)
    """Loss implementations (`parallel.loss`) the runtime executes, preferred first: `auto` runs the
    first. The torch runtime has the chunked head + cross-entropy (`specc.runtime.train.loss`); the
    torch-xla runtime computes the full logits and lets XLA fuse the loss."""

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
TPU_AXES = frozenset({"dp", "tp"})
TORCH_LOSSES = ("chunked", "full")


def resolve_loss(requested: str, losses: tuple[str, ...]) -> str:
    """`parallel.loss` on a runtime that executes `losses` (preferred first): `auto` is the first."""
    return losses[0] if requested == "auto" else requested


def capabilities_for(accelerator: Accelerator) -> Capabilities:
    """The capabilities of specc's runtime on `accelerator` (a catalog entry)."""
    if accelerator.kind == "tpu":
        return Capabilities(target="tpu", runtime="pretrain_tpu", parallel_axes=TPU_AXES, sharded_stages=(0, 3),
                            precisions=frozenset({"fp32", "bf16"}))
    if accelerator.kind == "cpu":
        return Capabilities(target="cpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                            precisions=frozenset({"fp32", "bf16"}), losses=TORCH_LOSSES)
    precisions = {"fp32", "fp16"}
    if accelerator.bf16:
        precisions.add("bf16")
    if accelerator.fp8:
        precisions.add("fp8")
    return Capabilities(target="gpu", runtime="pretrain", parallel_axes=TORCH_AXES, sharded_stages=(2, 3),
                        precisions=frozenset(precisions), losses=TORCH_LOSSES)
