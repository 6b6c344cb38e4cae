"""From the spec's `parallel` section to a named SPMD mesh and per-tensor partition specs.

Pure Python (no torch, no torch-xla) so that the mapping is testable in any environment.

Mesh axes, outermost first (MaxText's order, so the data axis can later span DCN):
- `data`: replicas that each hold a full copy of the (unsharded) state;
- `fsdp`: parameters, gradients and optimizer state sharded (ZeRO-3 semantics);
- `tensor`: Megatron-style column/row sharding of the matrices.
The batch is split over data x fsdp. Under GSPMD the compiler all-gathers a weight where it
is used, so ZeRO stages 1 and 2 are realised as full parameter sharding (stage 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.spec import parallel_dims
from specc.spec.capabilities import TPU
from specc.spec.parallel import ParallelSpec

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")
"""The mesh axes the batch dimension is split over."""

PartitionSpec = tuple[object, ...]
"""One entry per tensor dimension: an axis name, a tuple of axis names, or None (replicated)."""

COLUMN = ("tensor", "fsdp")
"""nn.Linear weight (out, in) whose output features are split over `tensor` (q, k, v, w1, w3)."""
ROW = ("fsdp", "tensor")
"""nn.Linear weight (out, in) whose input features are split over `tensor` (wo, w2)."""


@dataclass(frozen=True)
class MeshShape:
    """Degrees of the (data, fsdp, tensor) mesh."""

    data: int
    fsdp: int
    tensor: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)

    @property
    def num_devices(self) -> int:
        return self.data * self.fsdp * self.tensor

    @property
    def batch_shards(self) -> int:
        """Ways the batch is split (the data-parallel degree of the GPU path)."""
        return self.data * self.fsdp


def mesh_shape(parallel: ParallelSpec, num_devices: int) -> MeshShape:
    """The mesh for `parallel` on `num_devices` chips; a ValueError spells out what disagrees.

    Degrees resolve through `specc.spec.parallel_dims` and the axes and ZeRO stages the TPU runtime
    runs come from `specc.spec.capabilities` (what validate and the layout search read): dp (or
    `auto` = devices / tp) is the batch-parallel degree; with any sharding (`fsdp: true` or a ZeRO
    stage, all run as stage 3 under GSPMD) it becomes the fsdp axis, divided into `hsdp_replicas`
    data replicas.
    """
    capabilities = TPU
    unsupported = [axis for axis in ("pp", "cp", "ep") if getattr(parallel, axis) > 1 and not capabilities.supports_axis(axis)]
    if unsupported:
        listed = ", ".join(f"{axis}={getattr(parallel, axis)}" for axis in unsupported)
        raise parallel_dims.LayoutError(
            f"the TPU runtime shards over data, fsdp and tensor axes only; {listed} is not supported "
            f"(set {', '.join(unsupported)} to 1 and use dp/fsdp/tp)")
    dims = parallel_dims.resolve(parallel, num_devices)
    stage = capabilities.effective_zero_stage(parallel.zero_stage, parallel.fsdp, dims.dp)
    if stage < 3:
        return MeshShape(data=dims.dp, fsdp=1, tensor=dims.tp)
    return MeshShape(data=dims.dp_replicate, fsdp=dims.dp_shard, tensor=dims.tp)


def parameter_spec(name: str, ndim: int) -> PartitionSpec:
    """How parameter `name` (a `Transformer` FQN) is sharded over the mesh.

    Matrices follow Megatron-LM's pairing (column-parallel q/k/v and FFN up/gate, row-parallel
    attention output and FFN down) with the other matrix dimension sharded over fsdp; the
    vocabulary (embedding and output head, tied or not) is split over tensor; expert weights
    (experts, in, out) keep the expert dimension whole; norms and biases are replicated
    except q/k/v biases, which follow their column split.
    """
    leaf = name.rsplit(".", 1)[-1]
    module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    if ndim == 1:
        return ("tensor",) if module in ("wq", "wk", "wv") and leaf == "bias" else (None,)
    if ndim == 3:  # MoE experts: w1/w3 (E, hidden, width), w2 (E, width, hidden)
        return (None, "tensor", "fsdp") if leaf == "w2" else (None, "fsdp", "tensor")
    if module in ("wq", "wk", "wv", "w1", "w3"):
        return COLUMN
    if module in ("wo", "w2"):
        return ROW
    if module in ("tok_embeddings", "output"):
        return COLUMN  # (vocab, hidden): vocabulary-parallel, hidden over fsdp
    return (None,) * (ndim - 1) + ("fsdp",)  # learned positions, router: hidden over fsdp


def batch_spec(ndim: int) -> PartitionSpec:
    """Batch-first tensors (tokens, hidden states): batch over data x fsdp, the rest whole."""
    return (BATCH,) + (None,) * (ndim - 1)


def logits_spec() -> PartitionSpec:
    """(batch, seq, vocab) logits: the vocabulary stays split over tensor, as the head produced it."""
    return (BATCH, None, "tensor")
