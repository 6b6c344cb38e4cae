"""The distributed runtime of the alignment stages: the pretraining runtime's process group,
FSDP2 and recompute, applied to every model a stage holds.

One process per device (torchrun; `specc.pipeline`'s alignment kind spans the cluster like
pretraining). Every model is sharded over all ranks with `fully_shard` (per block, then the
root: ZeRO-3, torchtitan's order after recompute), so a rank holds 1/world of each model's
weights, and of the trained models' gradients and AdamW state. Frozen models (DPO's reference,
PPO's reference and reward model) are sharded the same way with no gradients or optimizer state
(the `colocated` placement the planner charges, `specc.plan.alignment_memory`). Tensor
parallelism is not used: alignment shards over data-parallel ranks only
(`Capabilities.alignment_parallel_axes`).

Batches: each optimizer step's examples are a function of the step (`align.data.step_indices`);
rank r trains on the r-th of `world` equal slices, so the global batch is the spec's
`batch_size` whatever the world size; a rank runs its slice in micro-batches of the spec's
`parallel.micro_batch` sequences, accumulating gradients. Losses are normalised over the global batch
(`global_sum`), and FSDP averages gradients over ranks, so a step's update is the one a single
process would compute on the whole batch (up to float summation order).

Precision (`Capabilities.alignment_precision`): bf16 compute with fp32 master weights, gradient
reduction and AdamW state (FSDP2's MixedPrecisionPolicy; autocast on one process), or fp32.

One process (no torchrun: the local executor on one device, tests): no process group, no
sharding; the same code with world = 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from specc.runtime.train import loop
from specc.runtime.train import parallelize as par
from specc.runtime.train.precision import compute_dtype
from specc.spec import parallel_dims
from specc.spec.parallel import ParallelSpec


@dataclass
class AlignRuntime:
    """The process group and how this stage's models are placed on it."""

    runtime: loop.Runtime
    precision: str = "fp32"
    recompute: str = "none"
    selective_policy: str = "matmuls"
    micro_batch: int | None = None
    """Sequences per forward/backward on a rank (the spec's `parallel.micro_batch`): a rank's share
    of a step runs in chunks of this many, their gradients accumulated (None: the whole share)."""

    @property
    def rank(self) -> int:
        return self.runtime.rank

    @property
    def world(self) -> int:
        return self.runtime.world_size

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def local_slice(self, items: list, what: str = "batch") -> list:
        """This rank's share of one step's global batch (rank r: the r-th of `world` equal slices)."""
        if len(items) % self.world:
            raise ValueError(f"a {what} of {len(items)} does not divide over {self.world} data-parallel ranks "
                             f"(`specc validate` reports this as R266)")
        share = len(items) // self.world
        return items[self.rank * share:(self.rank + 1) * share]

    def micro_batches(self, items: list, sequences_per_item: int = 1) -> list[list]:
        """This rank's share cut into micro-batches of `micro_batch` sequences (items of DPO and the
        reward model are pairs: two sequences each, at least one pair per micro-batch)."""
        size = max(1, (self.micro_batch or len(items) * sequences_per_item) // sequences_per_item)
        return [items[start:start + size] for start in range(0, len(items), size)]

    def global_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of a (detached) tensor; the value itself on one process."""
        value = value.detach().float().clone()
        if self.world > 1:
            dist.all_reduce(value)
        return value

    def mean(self, value: float) -> float:
        """Mean over ranks of a per-rank statistic computed on equal shares of the batch."""
        if self.world == 1:
            return float(value)
        return float(self.global_sum(torch.tensor(float(value), device=self.device))) / self.world

    def gather(self, value: object) -> list:
        """`value` from every rank, in rank order."""
        if self.world == 1:
            return [value]
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def autocast(self):
        """bf16 autocast on one process; under FSDP its mixed-precision policy casts instead."""
        dtype = compute_dtype(self.precision)
        if dtype is None or self.world > 1:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def place(self, model: nn.Module, blocks: Iterable[nn.Module] | None = None, trained: bool = True,
              trunk: nn.Module | None = None) -> nn.Module:
        """Put `model` on this rank's device: recompute on the trained models' blocks (of `trunk`, the
        Transformer inside it), then `fully_shard` each block and the root over every rank. A frozen
        model gets no gradients (and so no optimizer state)."""
        trunk = trunk if trunk is not None else model
        if not trained:
            model.requires_grad_(False)
        elif self.recompute != "none":
            par.apply_ac(trunk, self.recompute, self.selective_policy)
        on = next(model.parameters()).device
        if on.type != "meta" and on != self.device:  # a meta model is materialised after sharding
            model.to(self.device)
        if self.world == 1:
            return model
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=compute_dtype(self.precision), reduce_dtype=torch.float32)
        mesh = self.runtime.meshes["dp"]
        for block in trunk.layers.values():
            fully_shard(block, mesh=mesh, reshard_after_forward=True, mp_policy=policy)
        fully_shard(model, mesh=mesh, reshard_after_forward=True, mp_policy=policy)
        return model

    def full_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on the CPU (collective), on rank 0; None elsewhere."""
        if self.world == 1:
            return {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name: t.contiguous().clone() for name, t in state.items()} if self.main else None

    def close(self) -> None:
        """Leave the process group at the end of the stage (every rank)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 modules inside `model` (empty on one process)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


class Unsharded:
    """`with Unsharded(model):` gathers every FSDP unit's weights once and keeps them gathered, so
    that code calling the blocks' submodules directly (the KV-cache decoder) runs without
    collectives: PPO's ranks sample responses of different lengths, i.e. different numbers of
    forward calls, which per-call all-gathers would deadlock on."""

    def __init__(self, model: nn.Module):
        self.units = fsdp_units(model)

    def __enter__(self) -> Unsharded:
        for unit in self.units:
            unit.unshard()
        return self

    def __exit__(self, *exc) -> None:
        for unit in self.units:
            unit.reshard()


def device() -> torch.device:
    """This process's device: its GPU under torchrun (LOCAL_RANK), else the first GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def single_process() -> AlignRuntime:
    """One process, no process group (the distillation loop and the constitutional stage)."""
    dims = parallel_dims.resolve(ParallelSpec(), 1)
    return AlignRuntime(loop.Runtime(0, 1, device(), dims, None))


def init_align_runtime(params: dict, distributed: bool = True) -> AlignRuntime:
    """The process group from the torchrun environment (NCCL on GPU, gloo on CPU) and a
    data-parallel mesh over every rank; the stage's precision and recompute from its params.
    `distributed=False`: this process alone (a stage that runs on rank 0 only)."""
    precision = params.get("precision", "fp32")
    recompute = params.get("recompute", "none")
    selective = params.get("selective_policy", "matmuls")
    micro_batch = int(params["micro_batch"]) if params.get("micro_batch") else None
    if not distributed:
        return AlignRuntime(single_process().runtime, precision, recompute, selective, micro_batch)
    runtime = loop.init_runtime(ParallelSpec(precision=precision, recompute=recompute, selective_policy=selective))
    torch.manual_seed(int(params.get("seed", 0)))
    return AlignRuntime(runtime, precision, recompute, selective, micro_batch)
