"""Parallel degrees and every rule they obey: the one torch-free source of truth.

Why a module of its own (torchtitan's `ParallelDims` is the model): validate's rules, the
planner's layout search, the plan itself and both runtimes (torch and torch-xla) need the same
answers: what dp is once `auto` resolves, which degrees divide what, how long each rank's slice
of a sequence is, which layers are MoE layers, which layers each pipeline rank holds, which axes a
target can run. When each phase derived them on its own they disagreed (validate accepted
replicated KV heads that the runtime refuses; the TPU search proposed pipelines). Now each phase
asks this module, and a rule is written once, with its arithmetic in the message.

Problems are returned as data (`Problem`: key path, message, hint, severity) so validate can
locate them in the YAML; the runtimes call `require(...)`, which raises `LayoutError` with the
same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from specc.spec.capabilities import Capabilities
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec

Severity = Literal["error", "warning"]


class LayoutError(ValueError):
    """A layout the runtime cannot build; the message spells out which numbers disagree."""


@dataclass(frozen=True)
class Problem:
    """One broken layout rule: where in the spec, what disagrees, and what would fit."""

    path: tuple
    message: str
    hint: str
    severity: Severity = "error"


def divisors(n: int) -> list[int]:
    """All positive divisors of n, ascending."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# ---------------------------------------------------------------- the resolved degrees

@dataclass(frozen=True)
class ParallelDims:
    """Resolved degrees of every mesh axis: dp x tp x pp x cp = world size.

    dp = dp_replicate x dp_shard (HSDP replicas x FSDP shards); expert parallelism is carved out
    of the FSDP shard axis (ep divides dp_shard), as in torchtitan and Megatron-Core.
    """

    dp_replicate: int
    dp_shard: int
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    cp: int = 1
    ep: int = 1

    @property
    def dp(self) -> int:
        """Data-parallel ranks: the batch is split over them."""
        return self.dp_replicate * self.dp_shard

    @property
    def dp_cp(self) -> int:
        """Ranks that hold different tokens of one step: gradients are averaged over them."""
        return self.dp * self.cp

    @property
    def shard_ranks(self) -> int:
        """Ranks that split sharded model states: the FSDP shard axis times cp (context-parallel
        ranks see different tokens of the same sequences, so they shard like data-parallel ones)."""
        return self.dp_shard * self.cp

    @property
    def edp(self) -> int:
        """Replicas of one expert shard: dp x cp / ep."""
        return self.dp * self.cp // self.ep

    @property
    def model_parallel(self) -> int:
        """Devices one model replica spans: tp x pp x cp."""
        return self.tp * self.pp * self.cp

    @property
    def world_size(self) -> int:
        return self.dp * self.model_parallel

    @property
    def pipeline_chunks(self) -> int:
        return self.pp * self.vpp


def data_parallel_size(parallel: ParallelSpec, devices: int) -> int | None:
    """The dp degree: explicit, or devices / (tp x pp x cp) when that divides evenly."""
    if parallel.dp != "auto":
        return parallel.dp
    replica = parallel.tp * parallel.pp * parallel.cp
    return devices // replica if devices % replica == 0 else None


def degree_problems(parallel: ParallelSpec, devices: int) -> list[Problem]:
    """The degrees against the device count: dp x tp x pp x cp = devices, hsdp_replicas divides
    dp, ep divides the FSDP shard degree."""
    tp, pp, cp = parallel.tp, parallel.pp, parallel.cp
    replica = tp * pp * cp
    dp = data_parallel_size(parallel, devices)
    if dp is None:
        return [Problem(("parallel",),
                        f"devices ({devices}) are not divisible by tp x pp x cp = {tp} x {pp} x {cp} = {replica}",
                        f"choose tp x pp x cp among the divisors of {devices}: {divisors(devices)[:12]}")]
    problems = []
    if dp * replica != devices:
        fit = devices // replica if devices % replica == 0 else None
        problems.append(Problem(
            ("parallel", "dp"),
            f"dp x tp x pp x cp = {dp} x {tp} x {pp} x {cp} = {dp * replica}, but the cluster has {devices} devices",
            f"set dp: {fit} (or `auto`)" if fit else f"tp x pp x cp ({replica}) must divide {devices}"))
        return problems
    replicas = parallel.hsdp_replicas
    if replicas > 1 and not parallel.fsdp:
        problems.append(Problem(("parallel", "hsdp_replicas"), "hsdp_replicas needs fsdp: true", "set fsdp: true"))
    elif dp % replicas:
        problems.append(Problem(("parallel", "hsdp_replicas"), f"dp ({dp}) is not divisible by hsdp_replicas ({replicas})",
                                f"use one of {divisors(dp)}"))
    return problems


def expert_shard_problems(parallel: ParallelSpec, dp: int) -> list[Problem]:
    """Expert parallelism is carved out of the FSDP shard axis: ep divides dp / hsdp_replicas
    (experts are sharded inside each replica group; the runtime's mesh is
    pp x dp_replicate x dp_shard/ep x ep x cp x tp)."""
    replicas = parallel.hsdp_replicas if parallel.fsdp else 1
    shard = dp // replicas
    if parallel.ep == 1 or shard % parallel.ep == 0:
        return []
    return [Problem(("parallel", "ep"),
                    f"ep ({parallel.ep}) must divide the FSDP shard degree dp / hsdp_replicas = {dp} / {replicas} = {shard}",
                    f"use ep in {divisors(shard)}")]


def resolve(parallel: ParallelSpec, devices: int) -> ParallelDims:
    """The degrees of `parallel` on `devices`; LayoutError when they do not multiply out."""
    require(degree_problems(parallel, devices))
    dp = data_parallel_size(parallel, devices)
    require(expert_shard_problems(parallel, dp))
    replicas = parallel.hsdp_replicas if parallel.fsdp else 1
    return ParallelDims(dp_replicate=replicas, dp_shard=dp // replicas, tp=parallel.tp, pp=parallel.pp,
                        vpp=parallel.vpp, cp=parallel.cp, ep=parallel.ep)


def require(problems: list[Problem]) -> None:
    """Raise LayoutError for the error-level problems (warnings pass)."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise LayoutError("; ".join(f"{p.message} ({p.hint})" for p in errors))


# ---------------------------------------------------------------- the model against the degrees

def tp_problems(model: ModelSpec, tp: int) -> list[Problem]:
    """Tensor parallelism splits attention heads, KV heads and the FFN width evenly over tp ranks.

    KV heads are split, never replicated: specc's runtime shards wk/wv column-wise like wq, so
    num_kv_heads % tp == 0 (Megatron replicates KV heads when tp > num_kv_heads; specc does not).
    """
    if tp == 1:
        return []
    problems = []
    if model.num_heads % tp:
        problems.append(Problem(("parallel", "tp"),
                                f"num_heads ({model.num_heads}) is not divisible by tp ({tp}): "
                                f"{model.num_heads} / {tp} = {model.num_heads / tp:.3g}",
                                f"tp must divide num_heads, num_kv_heads and ffn_hidden_size: one of {valid_tp_degrees(model)}"))
    kv = model.kv_heads
    if kv % tp:
        problems.append(Problem(("parallel", "tp"),
                                f"num_kv_heads ({kv}) is not divisible by tp ({tp}): {kv} / {tp} = {kv / tp:.3g}; "
                                "specc's runtime splits KV heads over tp and does not replicate them",
                                f"use tp in {valid_tp_degrees(model)}"))
    if model.ffn_hidden_size % tp:
        problems.append(Problem(("parallel", "tp"),
                                f"ffn_hidden_size ({model.ffn_hidden_size}) is not divisible by tp ({tp})",
                                f"use tp in {valid_tp_degrees(model)}"))
    return problems


def valid_tp_degrees(model: ModelSpec) -> list[int]:
    """Every tp that splits heads, KV heads and the FFN width evenly."""
    return [t for t in divisors(model.kv_heads) if model.num_heads % t == 0 and model.ffn_hidden_size % t == 0]


def pipeline_problems(model: ModelSpec, pp: int, vpp: int) -> list[Problem]:
    """Every pp x vpp pipeline chunk holds at least one layer; the first stage holds the embedding
    and the last the head, so tied embeddings cannot be pipelined."""
    problems = []
    chunks = pp * vpp
    layers = model.num_layers
    if layers < chunks:
        problems.append(Problem(("parallel", "pp"),
                                f"num_layers ({layers}) is fewer than pp x vpp = {pp} x {vpp} = {chunks} pipeline chunks",
                                f"use pp x vpp <= {layers}"))
    elif layers % chunks:
        problems.append(Problem(("parallel", "pp"),
                                f"num_layers ({layers}) does not split evenly over pp x vpp = {chunks} chunks "
                                f"({layers / chunks:.2f} per chunk); the slowest stage sets the pace",
                                f"pp x vpp in {[d for d in divisors(layers) if 1 < d <= 64]} divide it evenly", "warning"))
    if pp > 1 and model.tie_embeddings:
        problems.append(Problem(("parallel", "pp"),
                                f"tie_embeddings cannot be pipelined (pp = {pp}): the embedding lives on the first "
                                "stage and the head on the last",
                                "set model.tie_embeddings: false, or pp: 1"))
    return problems


def expert_problems(model: ModelSpec, ep: int) -> list[Problem]:
    """Expert parallelism splits the routed experts evenly and needs a MoE model."""
    if ep == 1:
        return []
    if model.moe is None:
        return [Problem(("parallel", "ep"), f"ep ({ep}) is set but the model has no `moe` section",
                        "remove ep or add model.moe")]
    if model.moe.num_experts % ep:
        return [Problem(("parallel", "ep"), f"num_experts ({model.moe.num_experts}) is not divisible by ep ({ep})",
                        f"use ep in {divisors(model.moe.num_experts)}")]
    return []


def sequence_divisor(cp: int, load_balance: bool) -> int:
    """Chunks a sequence is cut into for context parallelism: 2 x cp for load-balanced causal
    ring attention (each rank takes chunk i and 2cp - 1 - i), else cp; 1 without cp."""
    if cp == 1:
        return 1
    return 2 * cp if load_balance else cp


def local_seq_len(seq_len: int, cp: int) -> int:
    """Tokens of each sequence on one context-parallel rank."""
    return seq_len // cp


def sequence_problems(seq_len: int, cp: int, load_balance: bool) -> list[Problem]:
    """The sequence splits into whole context-parallel chunks."""
    chunks = sequence_divisor(cp, load_balance)
    if seq_len % chunks == 0:
        return []
    why = "2 x cp" if load_balance else "cp"
    return [Problem(("schedule", "seq_len"), f"seq_len ({seq_len}) is not divisible by {why} = {chunks}",
                    f"use seq_len {seq_len // chunks * chunks or chunks} or {-(-seq_len // chunks) * chunks}")]


def batch_problems(batch_sequences: int, dp: int, micro_batch: int) -> list[Problem]:
    """The global batch splits into dp replicas x micro_batch x gradient-accumulation steps."""
    step = dp * micro_batch
    if batch_sequences % step == 0:
        return []
    lower, upper = batch_sequences // step * step, -(-batch_sequences // step) * step
    choices = " or ".join(str(v) for v in (lower, upper) if v > 0)
    return [Problem(("schedule", "global_batch_size"),
                    f"global batch ({batch_sequences} sequences) is not divisible by dp x micro_batch = "
                    f"{dp} x {micro_batch} = {step}",
                    f"use a global batch of {choices} sequences, or change micro_batch")]


def grad_accum_steps(batch_sequences: int, dp: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step on each data-parallel rank."""
    return max(1, batch_sequences // (dp * micro_batch))


# ---------------------------------------------------------------- layers: MoE set and pipeline split

def is_moe_layer(model: ModelSpec, layer_id: int) -> bool:
    """Layers i with i % layer_frequency == layer_frequency - 1 are MoE layers (every layer at
    frequency 1; every second, starting with layer 1, at frequency 2, as in GShard/Switch), except
    the first `first_k_dense` layers, which stay dense (DeepSeek's `first_k_dense_replace`)."""
    return model.moe is not None and _is_moe_id(layer_id, model.moe.layer_frequency, model.moe.first_k_dense)


def _is_moe_id(layer_id: int, frequency: int, first_k_dense: int) -> bool:
    """`is_moe_layer` on plain numbers; frequency 0 means a dense model."""
    return bool(frequency) and layer_id >= first_k_dense and layer_id % frequency == frequency - 1


def moe_layer_ids(model: ModelSpec) -> list[int]:
    return [i for i in range(model.num_layers) if is_moe_layer(model, i)]


def is_recomputed_layer(layer_id: int, recompute_every: int) -> bool:
    """Whether `recompute: full` with `recompute_every: n` recomputes block `layer_id` (a model-wide
    id): every n-th block, i % n == n - 1, as torchtitan's layer SAC counts them (1-based count % n == 0)."""
    return layer_id % recompute_every == recompute_every - 1


def pipeline_layer_ranges(num_layers: int, num_chunks: int) -> list[range]:
    """Contiguous layer ranges per pipeline chunk, the remainder going to the middle chunks (the
    first holds the embedding and the last the head, as in Llama 3 405B's 126 layers on 16 stages)."""
    base, extra = divmod(num_layers, num_chunks)
    counts = [base] * num_chunks
    middle = list(range(1, num_chunks - 1)) or list(range(num_chunks))
    for i in range(extra):
        counts[middle[i % len(middle)]] += 1
    starts = [sum(counts[:i]) for i in range(num_chunks)]
    return [range(s, s + c) for s, c in zip(starts, counts)]


def stage_ids_for_rank(pp_rank: int, pp: int, vpp: int) -> list[int]:
    """Looped assignment: rank r holds chunks r, r + pp, ... (Narayanan et al. 2021 interleaving)."""
    return [pp_rank + v * pp for v in range(vpp)]


def layers_of_rank(num_layers: int, pp: int, vpp: int, pp_rank: int) -> list[int]:
    """Every layer id pipeline rank `pp_rank` runs."""
    ranges = pipeline_layer_ranges(num_layers, pp * vpp)
    return [i for s in stage_ids_for_rank(pp_rank, pp, vpp) for i in ranges[s]]


def most_loaded_stage(model: ModelSpec, pp: int, vpp: int) -> tuple[int, int]:
    """(layers, MoE layers) on the pipeline rank holding the most layers (ties: most MoE layers),
    as specc's runtime splits them."""
    moe = model.moe
    return _most_loaded_stage(model.num_layers, moe.layer_frequency if moe else 0, pp, vpp, moe.first_k_dense if moe else 0)


def recomputed_layers_of_most_loaded_stage(model: ModelSpec, pp: int, vpp: int, recompute_every: int) -> tuple[int, int]:
    """(recomputed layers, recomputed MoE layers) on the rank `most_loaded_stage` picks, for
    `recompute: full` with `recompute_every` (`is_recomputed_layer`)."""
    moe = model.moe
    return _recomputed_on_most_loaded(model.num_layers, moe.layer_frequency if moe else 0, pp, vpp,
                                      moe.first_k_dense if moe else 0, recompute_every)


@lru_cache(maxsize=4096)
def _most_loaded_stage(num_layers: int, moe_frequency: int, pp: int, vpp: int, first_k_dense: int = 0) -> tuple[int, int]:
    """Cached on plain numbers: the layout search asks the same (layers, pp, vpp) thousands of
    times (the 405B search: 9,209 calls, 15 s uncached), and the split is a pure function of them.
    `moe_frequency` 0 means a dense model (no MoE layers)."""
    return max(_stage_counts(num_layers, moe_frequency, pp, vpp, first_k_dense, 1))[:2]


@lru_cache(maxsize=4096)
def _recomputed_on_most_loaded(num_layers: int, moe_frequency: int, pp: int, vpp: int, first_k_dense: int,
                               recompute_every: int) -> tuple[int, int]:
    """`recomputed_layers_of_most_loaded_stage` on plain numbers (cached like `_most_loaded_stage`)."""
    # the most-loaded rank; among equally loaded ones the one recomputing least (the most memory)
    stages = _stage_counts(num_layers, moe_frequency, pp, vpp, first_k_dense, recompute_every)
    return max(stages, key=lambda c: (c[0], c[1], -c[2], -c[3]))[2:]


def _stage_counts(num_layers: int, moe_frequency: int, pp: int, vpp: int, first_k_dense: int,
                  recompute_every: int) -> list[tuple[int, int, int, int]]:
    """Per pipeline rank: (layers, MoE layers, recomputed layers, recomputed MoE layers)."""
    ranges = pipeline_layer_ranges(num_layers, pp * vpp)
    counts = []
    for rank in range(pp):
        ids = [i for s in stage_ids_for_rank(rank, pp, vpp) for i in ranges[s]]
        moe = [i for i in ids if _is_moe_id(i, moe_frequency, first_k_dense)]
        recomputed = [i for i in ids if is_recomputed_layer(i, recompute_every)]
        counts.append((len(ids), len(moe), len(recomputed), sum(1 for i in moe if is_recomputed_layer(i, recompute_every))))
    return counts


# ---------------------------------------------------------------- what the target runs

def capability_problems(parallel: ParallelSpec, capabilities: Capabilities, shard_ranks: int) -> list[Problem]:
    """Degrees the target's runtime cannot run, and ZeRO stages it runs differently."""
    problems = []
    for axis in ("tp", "pp", "cp", "ep"):
        degree = getattr(parallel, axis)
        if degree > 1 and not capabilities.supports_axis(axis):
            supported = ", ".join(sorted(capabilities.parallel_axes))
            problems.append(Problem(("parallel", axis),
                                    f"{axis} = {degree}: the {capabilities.target} runtime ({capabilities.runtime}) "
                                    f"shards over {supported} only",
                                    f"set {axis}: 1 and scale with dp/fsdp/tp instead"))
    if parallel.sp and parallel.tp > 1 and not capabilities.sequence_parallel:
        problems.append(Problem(("parallel", "sp"),
                                f"sp: true is not run by the {capabilities.target} runtime ({capabilities.runtime})",
                                "remove sp (the plan would charge sequence-parallel activations that never happen)"))
    if parallel.recompute not in capabilities.recompute_modes:
        modes = " or ".join(f"recompute: {m}" for m in sorted(capabilities.recompute_modes))
        problems.append(Problem(("parallel", "recompute"),
                                f"recompute: {parallel.recompute} is not run by the {capabilities.target} runtime "
                                f"({capabilities.runtime}), which has {modes}",
                                "use recompute: full (whole blocks) or none"))
    requested = 3 if parallel.fsdp else parallel.zero_stage
    effective = capabilities.effective_zero_stage(parallel.zero_stage, parallel.fsdp, shard_ranks)
    if shard_ranks > 1 and parallel.zero_stage and effective != requested:
        problems.append(Problem(("parallel", "zero_stage"),
                                f"zero_stage {requested} runs as ZeRO-{effective} on {capabilities.target} "
                                f"({_zero_reason(capabilities)}); the plan charges ZeRO-{effective}",
                                f"write zero_stage: {effective}" if effective < 3 else "write fsdp: true",
                                "warning"))
    return problems


def _zero_reason(capabilities: Capabilities) -> str:
    if capabilities.target == "tpu":
        return "GSPMD gathers each weight where it is used, so any sharding shards parameters too"
    return "FSDP2 without resharding after forward shards gradients and optimizer state together"


def layout_problems(model: ModelSpec, parallel: ParallelSpec, dims: ParallelDims, seq_len: int,
                    capabilities: Capabilities | None = None) -> list[Problem]:
    """Every rule between the model, the sequence, the target and resolved degrees."""
    problems = tp_problems(model, dims.tp) + pipeline_problems(model, dims.pp, dims.vpp)
    problems += expert_problems(model, dims.ep)
    problems += sequence_problems(seq_len, dims.cp, parallel.cp_load_balance)
    if capabilities is not None:
        problems += capability_problems(parallel, capabilities, dims.shard_ranks)
    return problems
