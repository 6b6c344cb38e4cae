"""Layout search: enumerate valid layouts, drop those that do not fit, rank by predicted step time.

The enumeration applies the same divisibility rules as `specc/diagnostics/rules/parallel_rules.py`
inline (cheap integer tests in the loop), and the final candidates are checked once more by those
rules themselves, so a proposed layout always validates.

Pruning, so that 405B on 16,384 GPUs searches in well under a second:
- tp stays inside the fast domain (NVLink node / TPU slice) and divides heads and FFN width;
- recompute is tried from cheapest (none) to most memory-saving (full) and the first that fits
  is kept: recomputation only adds time, so a layout that fits without it is never slower;
- micro-batches grow only while some recompute choice still fits (memory rises with micro-batch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from specc.plan.estimate import Estimate, Workload, evaluate
from specc.plan.layout import Layout

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


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] if n <= 4096 else _large_divisors(n)


def _large_divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _tp_choices(work: Workload, fast_domain: int) -> list[int]:
    model = work.model
    kv = model.kv_heads
    return [t for t in _divisors(work.devices) if t <= fast_domain and model.num_heads % t == 0
            and (kv % t == 0 or t % kv == 0) and model.ffn_hidden_size % t == 0]


def _pp_choices(work: Workload, rest: int) -> list[tuple[int, int]]:
    """(pp, vpp) pairs: pp divides the remaining devices and has layers for every stage; virtual
    stages only where they divide the layers evenly."""
    layers = work.model.num_layers
    pairs = []
    for pp in _divisors(rest):
        if pp > min(MAX_PP, layers):
            continue
        pairs.append((pp, 1))
        if pp > 1:
            pairs.extend((pp, v) for v in (2, 4) if layers % (pp * v) == 0)
    return pairs


def _cp_choices(work: Workload, rest: int) -> list[int]:
    seq = work.seq_len
    return [c for c in _divisors(rest) if c <= MAX_CP and seq % (2 * c) == 0 and (c == 1 or seq // c >= MIN_CP_TOKENS)]


def _ep_choices(work: Workload, dp_cp: int) -> list[int]:
    moe = work.model.moe
    if moe is None:
        return [1]
    return [e for e in _divisors(moe.num_experts) if dp_cp % e == 0]


RECOMPUTE_ORDER = (("none", "matmuls"), ("selective", "matmuls"), ("selective", "alternate_matmuls"),
                   ("full", "matmuls"))
"""(recompute, selective_policy) from fastest to most memory-saving: selective keeping every matmul
output costs no matmul FLOPs, torchtitan's alternate policy recomputes half of them, full all."""


def search(work: Workload, precision: str, fast_domain: int, top: int) -> SearchResult:
    """Every valid layout for the workload, best (shortest step) first, at most `top` kept per
    distinct (tp, pp, vpp, cp, ep, sharding) structure."""
    result = SearchResult(ranked=[])
    hardware = work.hardware(precision)
    batch = work.batch_sequences
    best_by_structure: dict[tuple, Estimate] = {}
    for tp in _tp_choices(work, fast_domain):
        for pp, vpp in _pp_choices(work, work.devices // tp):
            for cp in _cp_choices(work, work.devices // (tp * pp)):
                dp = work.devices // (tp * pp * cp)
                if batch % dp:
                    result.rejected["global batch not divisible by dp"] += 1
                    continue
                for ep in _ep_choices(work, dp * cp):
                    for sharding in _shardings(dp * cp):
                        found = _best_micro_batch(work, hardware, result, tp=tp, pp=pp, vpp=vpp, cp=cp, dp=dp,
                                                  ep=ep, sharding=sharding, precision=precision)
                        if found is not None:
                            best_by_structure[(tp, pp, vpp, cp, ep, sharding)] = found
    result.ranked = sorted(best_by_structure.values(), key=_rank_key)
    return result


def _shardings(shard_ranks: int) -> tuple[str, ...]:
    """ZeRO-1 (Megatron distributed optimizer) and FSDP (ZeRO-3); plain replication only without dp."""
    return ("fsdp", "zero1") if shard_ranks > 1 else ("none",)


def _rank_key(estimate: Estimate) -> tuple:
    layout = estimate.layout
    # Ties (identical predicted time) break towards simpler layouts, deterministically.
    return (round(estimate.time.step_s, 9), layout.tp * layout.pp * layout.cp * layout.ep, layout.vpp,
            layout.micro_batch, layout.fsdp, layout.zero_stage, layout.recompute, layout.selective_policy)


def _best_micro_batch(work: Workload, hardware, result: SearchResult, *, tp: int, pp: int, vpp: int, cp: int,
                      dp: int, ep: int, sharding: str, precision: str) -> Estimate | None:
    """The fastest fitting (micro_batch, recompute) for one structure."""
    per_replica = work.batch_sequences // dp
    best = None
    micro = 1
    while micro <= min(MAX_MICRO_BATCH, per_replica):
        if per_replica % micro:
            micro *= 2
            continue
        fitted = None
        for recompute, policy in RECOMPUTE_ORDER:
            layout = Layout(dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, vpp=vpp, zero_stage=1 if sharding == "zero1" else 0,
                            fsdp=sharding == "fsdp", sp=tp > 1, micro_batch=micro, grad_accum=per_replica // micro,
                            recompute=recompute, selective_policy=policy,
                            pp_schedule="interleaved" if vpp > 1 else "1f1b",
                            precision=precision)
            estimate = evaluate(work, layout, hardware)
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
