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

    dp (or `auto` = devices / tp) is the batch-parallel degree; with `fsdp: true` (or any
    ZeRO stage) it becomes the fsdp axis, divided into `hsdp_replicas` data replicas.
    """
    unsupported = {name: getattr(parallel, name) for name in ("pp", "cp", "ep") if getattr(parallel, name) > 1}
    if unsupported:
        listed = ", ".join(f"{name}={degree}" for name, degree in unsupported.items())
        raise ValueError(f"the TPU runtime shards over data, fsdp and tensor axes only; {listed} is not supported "
                         f"(set {', '.join(unsupported)} to 1 and use dp/fsdp/tp)")
    tp = parallel.tp
    if num_devices % tp:
        raise ValueError(f"tp ({tp}) does not divide the device count ({num_devices})")
    dp = num_devices // tp if parallel.dp == "auto" else parallel.dp
    if dp * tp != num_devices:
        raise ValueError(f"invalid parallel degrees: dp({dp}) x tp({tp}) = {dp * tp} != devices({num_devices}); "
                         f"dp={num_devices // tp} (or auto) would fit")
    if not (parallel.fsdp or parallel.zero_stage > 0):
        return MeshShape(data=dp, fsdp=1, tensor=tp)
    replicas = parallel.hsdp_replicas
    if dp % replicas:
        raise ValueError(f"hsdp_replicas ({replicas}) does not divide dp ({dp})")
    return MeshShape(data=replicas, fsdp=dp // replicas, tensor=tp)


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
