"""Layout search: enumerate valid layouts, drop those that do not fit, rank by predicted step time.

The enumeration asks `specc.spec.parallel_dims` (the rules validate and both runtimes apply) and
`specc.spec.capabilities` (the axes and ZeRO stages the target's runtime runs), so a proposed
layout always validates and the runtime builds it; the final candidates are checked once more by
validate's rules themselves.

Pruning, so that 405B on 16,384 GPUs searches in well under a second:
- tp stays inside the fast domain (NVLink node / TPU slice) and divides heads and FFN width;
- recompute is tried from cheapest (none) to costliest (full on every block) and the first that
  fits is kept: recomputation only adds time, so a layout that fits without it is never slower;
- micro-batches grow only while some recompute choice still fits (memory rises with micro-batch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from specc.plan.estimate import Estimate, Workload, estimate_layout
from specc.plan.layout import Layout
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import Capabilities, capabilities_for

MAX_PP = 64
MAX_CP = 32
MAX_MICRO_BATCH = 16
MIN_CP_TOKENS = 4096
"""Context parallelism is only proposed while each rank keeps >= this many tokens: below it the
ring's K/V transfers outgrow the attention they hide behind."""


@dataclass
class SearchResult:
    ranked: list[Estimate]
    evaluated: int = 0
    rejected: Counter = field(default_factory=Counter)
    closest: Estimate | None = None
    """The smallest-memory layout tried, to explain a search where nothing fits."""

    def summary(self) -> dict:
        return {"evaluated": self.evaluated, "fitting": len(self.ranked),
                "rejected": dict(sorted(self.rejected.items()))}


_divisors = dims.divisors


def _errors(problems: list[dims.Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def _tp_choices(work: Workload, fast_domain: int, caps: Capabilities) -> list[int]:
    if not caps.supports_axis("tp"):
        return [1]
    valid = dims.valid_tp_degrees(work.model)
    return [t for t in _divisors(work.devices) if t <= fast_domain and t in valid]


def _pp_choices(work: Workload, rest: int, caps: Capabilities) -> list[tuple[int, int]]:
    """(pp, vpp) pairs: pp divides the remaining devices and has layers for every stage; virtual
    stages only where they divide the layers evenly."""
    if not caps.supports_axis("pp"):
        return [(1, 1)]
    layers = work.model.num_layers
    pairs = []
    for pp in _divisors(rest):
        if pp > MAX_PP or _errors(dims.pipeline_problems(work.model, pp, 1)):
            continue
        pairs.append((pp, 1))
        if pp > 1:
            pairs.extend((pp, v) for v in (2, 4) if layers % (pp * v) == 0)
    return pairs


def _cp_choices(work: Workload, rest: int, caps: Capabilities) -> list[int]:
    if not caps.supports_axis("cp"):
        return [1]
    seq = work.seq_len
    return [c for c in _divisors(rest) if c <= MAX_CP and not dims.sequence_problems(seq, c, True)
            and (c == 1 or dims.local_seq_len(seq, c) >= MIN_CP_TOKENS)]


def _ep_choices(work: Workload, dp: int, caps: Capabilities) -> list[int]:
    """Expert-parallel degrees that split the experts and divide the FSDP shard axis (dp: the search
    proposes no HSDP replicas)."""
    moe = work.model.moe
    if moe is None or not caps.supports_axis("ep"):
        return [1]
    return [e for e in _divisors(moe.num_experts) if dp % e == 0]


RECOMPUTE_ORDER = (("none", "matmuls", 1), ("selective", "matmuls", 1), ("full", "matmuls", 4),
                   ("selective", "alternate_matmuls", 1), ("full", "matmuls", 2), ("full", "matmuls", 1))
"""(recompute, selective_policy, recompute_every) in order of recomputed forward FLOPs, cheapest
first: selective keeping every matmul output recomputes no matmul; full recompute of one block in
4 (torchtitan's layer SAC, `recompute_every: 4`) re-runs a quarter of the forward; the alternate
selective policy about half the matmuls; one block in 2 half the forward; full all of it. The order
is what lets the search keep the first choice that fits."""


def search(work: Workload, precision: str, fast_domain: int, top: int, fp8_recipe: str = "tensorwise") -> SearchResult:
    """Every valid layout for the workload, best (shortest step) first, at most `top` kept per
    distinct (tp, pp, vpp, cp, ep, sharding) structure; `fp8_recipe` is the spec's (fp8 only)."""
    result = SearchResult(ranked=[])
    hardware = work.hardware(precision)
    caps = capabilities_for(work.accelerator)
    batch = work.batch_sequences
    best_by_structure: dict[tuple, Estimate] = {}
    for tp in _tp_choices(work, fast_domain, caps):
        for pp, vpp in _pp_choices(work, work.devices // tp, caps):
            for cp in _cp_choices(work, work.devices // (tp * pp), caps):
                dp = work.devices // (tp * pp * cp)
                if batch % dp:
                    result.rejected["global batch not divisible by dp"] += 1
                    continue
                for ep in _ep_choices(work, dp, caps):
                    for sharding in _shardings(dp * cp, caps):
                        found = _best_micro_batch(work, hardware, result, tp=tp, pp=pp, vpp=vpp, cp=cp, dp=dp,
                                                  ep=ep, sharding=sharding, sp=tp > 1 and caps.sequence_parallel,
                                                  precision=precision, fp8_recipe=fp8_recipe)
                        if found is not None:
                            best_by_structure[(tp, pp, vpp, cp, ep, sharding)] = found
    result.ranked = sorted(best_by_structure.values(), key=_rank_key)
    return result


def _shardings(shard_ranks: int, caps: Capabilities) -> tuple[int, ...]:
    """The ZeRO stages the target's runtime runs (torch: FSDP2 as ZeRO-2 or ZeRO-3; TPU: replicas
    or full sharding); stage 0 only without data-parallel ranks."""
    if shard_ranks <= 1:
        return (0,)
    return tuple(reversed(caps.sharded_stages))


def _recompute_choices(work: Workload) -> tuple[tuple[str, str, int], ...]:
    """RECOMPUTE_ORDER less the modes the target's runtime does not run (the TPU has no selective)
    and partial recompute that would recompute no block (`recompute_every` above the layer count,
    R298)."""
    modes = capabilities_for(work.accelerator).recompute_modes
    return tuple((mode, policy, every) for mode, policy, every in RECOMPUTE_ORDER
                 if mode in modes and every <= work.model.num_layers)


def _rank_key(estimate: Estimate) -> tuple:
    layout = estimate.layout
    # Ties (identical predicted time) break towards simpler layouts, deterministically.
    return (round(estimate.time.step_s, 9), layout.tp * layout.pp * layout.cp * layout.ep, layout.vpp,
            layout.micro_batch, layout.fsdp, layout.zero_stage, layout.recompute, layout.selective_policy,
            layout.recompute_every)


def _best_micro_batch(work: Workload, hardware, result: SearchResult, *, tp: int, pp: int, vpp: int, cp: int,
                      dp: int, ep: int, sharding: int, sp: bool, precision: str, fp8_recipe: str) -> Estimate | None:
    """The fastest fitting (micro_batch, recompute) for one structure."""
    per_replica = work.batch_sequences // dp
    best = None
    micro = 1
    while micro <= min(MAX_MICRO_BATCH, per_replica):
        if per_replica % micro:
            micro *= 2
            continue
        fitted = None
        for recompute, policy, every in _recompute_choices(work):
            layout = Layout(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, vpp=vpp, zero_stage=0 if sharding == 3 else sharding,
                            fsdp=sharding == 3, sp=sp, micro_batch=micro, grad_accum=per_replica // micro,
                            recompute=recompute, selective_policy=policy, recompute_every=every,
                            pp_schedule="interleaved" if vpp > 1 else "1f1b",
                            precision=precision, fp8_recipe=fp8_recipe)
            estimate = estimate_layout(work, layout, hardware)
            result.evaluated += 1
            if result.closest is None or estimate.memory.total < result.closest.memory.total:
                result.closest = estimate
            if estimate.fits:
                fitted = estimate
                break
            result.rejected["does not fit in memory"] += 1
        if fitted is None:
            break  # larger micro-batches need more memory still
        if best is None or fitted.time.step_s < best.time.step_s:
            best = fitted
        micro *= 2
    return best
