"""Assemble the Plan: the contract object of ../shared/DESIGN.md (schema_version 1), deterministic.

`build_plan(spec)` evaluates the spec's fixed layout, or searches when `parallel: auto` (or when
asked), and gathers memory, time, cost, scaling and deployment figures with coded warnings.
`plan_json(plan)` serialises with sorted keys; the same spec always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math

from pydantic import BaseModel, ConfigDict

from specc import __version__
from specc.catalog import load_catalog
from specc.plan.estimate import Estimate, Workload, estimate_layout
from specc.plan.findings import classified
from specc.plan.layout import Layout, layout_from_spec
from specc.plan.data_stage import data_estimate, data_findings
from specc.plan.reliability import failure_budget
from specc.plan.scaling import scaling_check
from specc.plan.search import SearchResult, search
from specc.plan.alignment_memory import alignment_memory
from specc.plan.serving import estimate_target
from specc.spec.capabilities import capabilities_for
from specc.plan.calibrate import error_bars
from specc.spec.derived import cluster_accelerator, devices_per_node, total_devices
from specc.spec.parallel_dims import data_parallel_size
from specc.spec.root import Spec
from specc.stage_graph import pretrains, stage_names

SCHEMA_VERSION = 1

MFU_CONVENTION = ("model FLOPs = 6 x active matmul parameters (output head included, embedding lookup excluded) "
                  "+ causal attention 6·L·H·Q·s per token (PaLM App. B halved for causal masking); no recompute; "
                  "over the dense peak of the compute precision")

ERROR_BARS = {
    "throughput_median_abs_pct": 7.7,
    "throughput_p90_abs_pct": 17.2,
    "throughput_basis": "leave-one-source-out over 205 published runs from 10 sources (llm-foundry A100/H100, "
                        "Megatron SC21, Korthikanti 2022, torchtitan, MaxText TPU, NeMo 24.07 H100, 25.02 B200, "
                        "25.04 GB200, DeepSeek-V3): each source predicted with constants fitted on the other nine, "
                        "94% of runs within 20% (benchmarks/plan_vs_published.py --cv); 7.0% over the 181 "
                        "calibration runs alone; 7.7% median on the 24 runs never fitted (fp8, MoE, 64k; --held-out)",
    "memory_median_abs_pct": 1.4,
    "memory_basis": "whole-step peak vs torch FSDPMemTracker on specc's runtime model, 27 of the 51 configs re-run "
                    "after parallel.loss (17 full-logits, 10 chunked: sizes, batch, recompute policies, eager/sdpa "
                    "attention, bf16 and fp32, FSDP 2-8, ZeRO-2, tp 2 with and without sequence parallelism; max 7.3%, "
                    "where the peak falls in backward; benchmarks/plan_vs_tracker.py)",
    "memory_published_median_abs_pct": 7.3,
    "memory_published_basis": "6 torchtitan allocator peaks (max reserved, FSDP2's side-stream pools included), "
                              "4 of 6 under, worst -13%; 181 of 181 calibration and 21 of 24 held-out runs "
                              "predicted to fit (benchmarks/plan_vs_published.py --held-out)",
}
"""Measured accuracy of the time and memory models, printed with every plan: the figures of
`benchmarks/plan_vs_published.py --cv` and `benchmarks/plan_vs_tracker.py` (rerun them and update
these after changing a model or constant)."""

BUBBLE_WARNING = 0.25
COMM_WARNING = 0.30


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class PlanSpec(_Open):
    name: str
    sha256: str


class PlanModel(_Open):
    params: int
    active_params: int
    flops_per_token: float


class PlanHardware(_Open):
    accelerator: str
    count: int
    peak_tflops: float
    memory_gib: float


class PlanLayout(_Open):
    dp: int
    tp: int
    pp: int
    cp: int
    ep: int
    vpp: int
    zero_stage: int
    micro_batch: int
    grad_accum: int
    recompute: str


class PlanMemory(_Open):
    per_device_gib: float
    fits: bool
    breakdown_gib: dict[str, float]


class PlanTime(_Open):
    step_s: float
    tokens_per_s: float
    mfu: float
    train_days: float
    device_hours: float


class Candidate(_Open):
    layout: PlanLayout
    memory: PlanMemory
    time: PlanTime


class PlanWarning(_Open):
    """A plan finding; `severity` and `path` (the spec key it is about) per `specc.plan.findings`."""

    code: str
    message: str


class PlanScaling(_Open):
    tokens_per_param: float
    chinchilla_tokens: float
    predicted_loss: float


class Plan(_Open):
    """The plan contract (../shared/DESIGN.md); extra fields are allowed and used."""

    schema_version: int
    spec: PlanSpec
    model: PlanModel
    hardware: PlanHardware
    layout: PlanLayout | None
    """The pretrain stage's layout; None when the spec has no pretrain stage (a fine-tune)."""
    memory: PlanMemory | None
    time: PlanTime | None
    """Pretraining time and cost; None without a pretrain stage (nothing is charged for it)."""
    candidates: list[Candidate]
    warnings: list[PlanWarning]
    scaling: PlanScaling | None


def _sig(value: float, digits: int = 6) -> float:
    """Round to significant digits so that floats print identically everywhere."""
    return float(f"{value:.{digits}g}") if value and math.isfinite(value) else 0.0


def spec_sha256(spec: Spec) -> str:
    """sha256 of the spec's canonical JSON: overrides and `extends` resolved, comments, key order and
    values equal to their defaults excluded (so a new optional field in the schema keeps old hashes)."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _workload(spec: Spec) -> Workload:
    accelerator = cluster_accelerator(spec.cluster)  # catalog entry, cluster overrides and network applied
    devices = total_devices(spec.cluster)
    batch = spec.schedule.batch_sequences()
    if not batch:
        parallel = spec.parallel
        dp = devices if isinstance(parallel, str) else (data_parallel_size(parallel, devices) or 1)
        batch = dp * (1 if isinstance(parallel, str) else parallel.micro_batch)
    return Workload(model=spec.model, seq_len=spec.schedule.seq_len, batch_sequences=batch,
                    accelerator=accelerator, devices=devices, devices_per_node=devices_per_node(spec.cluster))


def _default_precision(spec: Spec, work: Workload) -> str:
    from specc.plan.layout import compute_precision

    return compute_precision(spec.parallel, work.accelerator)


def _time_contract(estimate: Estimate, spec: Spec, work: Workload) -> dict:
    time = estimate.time
    steps = spec.schedule.total_steps() or 0
    if spec.schedule.steps is None and spec.schedule.token_budget:
        steps = math.ceil(spec.schedule.token_budget / work.tokens_per_step)
    seconds = steps * time.step_s
    device_hours = seconds / 3600 * work.devices
    price = spec.cluster.cost_per_device_hour
    if price is None:
        price = work.accelerator.cost_per_device_hour
    return {
        "step_s": _sig(time.step_s), "tokens_per_s": _sig(time.tokens_per_s), "mfu": round(time.mfu, 4),
        "hfu": round(time.hfu, 4), "tflops_per_device": _sig(time.mfu * time.peak_tflops, 5),
        "steps": steps, "train_days": _sig(seconds / 86400), "device_hours": _sig(device_hours),
        "cost_usd": _sig(device_hours * price), "cost_per_device_hour": price,
        "breakdown_s": {k: _sig(v) for k, v in time.breakdown().items()},
    }


def _candidate(estimate: Estimate, spec: Spec, work: Workload) -> dict:
    return {"layout": estimate.layout.contract(), "memory": estimate.memory.contract(),
            "time": _time_contract(estimate, spec, work)}


def _layout_warnings(estimate: Estimate) -> list[dict]:
    warnings = []
    memory, time = estimate.memory, estimate.time
    if not memory.fits:
        contract = memory.contract()
        parts = {k: v for k, v in contract["breakdown_gib"].items() if k != "other"} | contract["detail_gib"]
        largest = max(parts, key=parts.get)
        why = ""
        if largest == "fsdp_buffers" and estimate.layout.grad_accum > 1 and estimate.layout.pp == 1:
            why = ("; FSDP holds unsharded fp32 gradients across the "
                   f"{estimate.layout.grad_accum} accumulation steps (gradients sync on the last micro-batch)")
        warnings.append({"code": "P201", "message": (
            f"predicted {memory.total_gib:.1f} GiB per device exceeds the {memory.capacity_gib:.1f} GiB of the "
            f"accelerator ({memory.stage} pipeline stage; largest part: {largest} {parts[largest]:.1f} GiB{why}); "
            f"try recompute, a smaller micro_batch, more sharding, or `specc plan --search`")})
    if time.bubble > BUBBLE_WARNING * time.step_s:
        warnings.append({"code": "P204", "message": (
            f"pipeline bubble is {time.bubble / time.step_s:.0%} of the step: raise gradient accumulation "
            f"(global batch / (dp x micro_batch) = {estimate.layout.grad_accum}) or use virtual stages")})
    exposed = time.tp_comm + time.cp_comm + time.pp_comm + time.dp_comm + time.ep_comm
    if exposed > COMM_WARNING * time.step_s:
        parts = {"tp": time.tp_comm, "cp": time.cp_comm, "pp": time.pp_comm, "dp/fsdp": time.dp_comm, "ep": time.ep_comm}
        worst = max(parts, key=parts.get)
        warnings.append({"code": "P205", "message": (
            f"exposed communication is {exposed / time.step_s:.0%} of the step (mostly {worst}): the layout is "
            f"communication-bound; `specc plan --search` ranks alternatives")})
    return warnings


def _checkpoint_warning(spec: Spec, step_s: float) -> list[dict]:
    """Steps between checkpoints x predicted step time against the Slurm time limit."""
    if spec.cluster.executor != "slurm":
        return []
    slurm = spec.cluster.slurm
    usable_s = slurm.training_time() * 60 - slurm.signal_seconds
    interval_s = spec.schedule.checkpoint_interval * step_s
    if spec.schedule.checkpoint_every is None and interval_s >= usable_s:
        return [{"code": "P202", "message": (
            f"checkpoint_interval ({spec.schedule.checkpoint_interval} steps x {step_s:.3g} s = "
            f"{interval_s / 3600:.1f} h) is longer than the Slurm time limit ({slurm.training_time() / 60:.1f} h): only the "
            f"pre-emption signal would save progress; set checkpoint_interval <= {max(1, int(usable_s / 2 / step_s))} "
            f"or checkpoint_every")}]
    return []


def _failure_budget(spec: Spec, work: Workload, chosen: Estimate):
    """Goodput, the optimal checkpoint interval and the requeues the run needs (`specc.plan.reliability`)."""
    time = _time_contract(chosen, spec, work)
    slurm = spec.cluster.slurm if spec.cluster.executor == "slurm" else None
    return failure_budget(spec.cluster.reliability, slurm, spec.schedule, devices=work.devices,
                          nodes=spec.cluster.nodes, params=work.counts.total, layout=chosen.layout,
                          step_s=chosen.time.step_s, steps=time["steps"])


def _stages_findings(spec: Spec) -> tuple[list[dict], list[dict], list[dict]]:
    """(deploy targets, alignment stages) with their P301/P302 findings."""
    warnings: list[dict] = []
    deploy = []
    for index, target in enumerate(spec.deploy.targets):
        served = estimate_target(spec.model, target)
        deploy.append(served.contract())
        if not served.fits:
            warnings.append({"code": "P301", "path": f"deploy.targets[{index}]", "message": (
                f"deploy target `{served.name}` needs {served.per_device_gib:.1f} GiB per device on {served.count} x "
                f"{served.accelerator} ({served.capacity_gib:.1f} GiB): raise count, quantize, or lower "
                f"max_batch x max_context")})
    alignment = alignment_memory(spec)
    for index, stage in enumerate(alignment):
        if not stage["fits"]:
            warnings.append({"code": "P302", "path": f"alignment[{index}]", "message": (
                f"alignment stage `{stage['stage']}` ({stage['type']}) needs {stage['per_device_gib']:.1f} GiB per "
                f"device ({stage['placement']}) but a device has {stage['capacity_gib']:.1f} GiB")})
    return warnings, deploy, alignment


def _common(spec: Spec, work: Workload, precision: str, overrides: list[str] | None) -> dict:
    """The plan's fields that do not depend on a pretrain stage."""
    counts, hardware = work.counts, work.hardware(precision)
    return {
        "schema_version": SCHEMA_VERSION,
        "specc_version": __version__,
        "spec": {"name": spec.name, "sha256": spec_sha256(spec), "overrides": list(overrides or [])},
        "stages": stage_names(spec),
        "model": {"params": counts.total, "active_params": counts.active, "embedding_params": counts.embedding,
                  "non_embedding_params": counts.non_embedding, "flops_per_token": _sig(work.flops.model),
                  "flops_convention": MFU_CONVENTION},
        "hardware": {"accelerator": work.accelerator.id, "count": work.devices, "peak_tflops": hardware.peak_tflops,
                     "memory_gib": round(hardware.memory_gib, 4), "precision": precision, "kind": work.accelerator.kind,
                     "devices_per_node": work.devices_per_node},
        "batch": {"sequences": work.batch_sequences, "seq_len": work.seq_len, "tokens": work.tokens_per_step},
        "error_bars": error_bars(ERROR_BARS, work.accelerator),  # + the cluster.profile's, if any
    }


def _fine_tune_plan(spec: Spec, work: Workload, precision: str, overrides: list[str] | None) -> Plan:
    """A spec without a pretrain stage (`specc.stage_graph.pretrains`): nothing is charged for
    pretraining (no layout, memory, time, cost or scaling check); the alignment stages' memory and
    the deploy targets are planned as always; `stages` lists what runs."""
    warnings, deploy, alignment = _stages_findings(spec)
    data = {**_common(spec, work, precision, overrides), "layout": None, "memory": None, "time": None,
            "candidates": [], "warnings": classified(warnings), "scaling": None, "deploy": deploy,
            "alignment": alignment, "search": None, "searched": False, "reliability": None}
    return Plan.model_validate(data)


def build_plan(spec: Spec, *, force_search: bool = False, top: int = 5, overrides: list[str] | None = None) -> Plan:
    """The plan of a validated spec."""
    work = _workload(spec)
    if not pretrains(spec):
        return _fine_tune_plan(spec, work, _default_precision(spec, work), overrides)
    precision = _default_precision(spec, work)
    hardware = work.hardware(precision)
    warnings: list[dict] = []
    searching = force_search or isinstance(spec.parallel, str)
    result: SearchResult | None = None
    fixed: Estimate | None = None
    if not isinstance(spec.parallel, str):
        dp = data_parallel_size(spec.parallel, work.devices) or 1
        layout = layout_from_spec(spec.parallel, dp, work.batch_sequences, capabilities_for(work.accelerator))
        fixed = estimate_layout(work, layout, hardware)
    if searching:
        fast = work.devices_per_node if not hardware.is_tpu else min(16, hardware.fast_domain)
        recipe = spec.parallel.fp8_recipe if not isinstance(spec.parallel, str) else "tensorwise"
        result = search(work, precision, fast, top, recipe)
        ranked = [e for e in result.ranked if _passes_rules(spec, e.layout)][:max(1, top)]
        if ranked:
            chosen = ranked[0]
        else:
            chosen = fixed or result.closest
            warnings.append({"code": "P206", "message": (
                f"no layout of {work.devices} x {work.accelerator.id} fits this model and batch "
                f"({result.evaluated} evaluated); showing the smallest-memory one: add devices, shorten seq_len "
                f"or reduce the batch")})
        candidates = ranked or [chosen]
        if fixed is not None and ranked and fixed.time.step_s > chosen.time.step_s * 1.05:
            warnings.append({"code": "P207", "message": (
                f"the searched layout is {fixed.time.step_s / chosen.time.step_s - 1:.0%} faster than the spec's "
                f"({chosen.time.step_s:.3g} s vs {fixed.time.step_s:.3g} s per step)")})
    else:
        chosen = fixed
        candidates = [fixed]
    warnings.extend(_layout_warnings(chosen))
    warnings.extend(_checkpoint_warning(spec, chosen.time.step_s))
    counts = work.counts
    budget = _failure_budget(spec, work, chosen)
    if budget is not None:
        warnings.extend(budget.findings())
    tokens = spec.schedule.token_budget or (spec.schedule.total_steps() or 0) * work.tokens_per_step
    scaling = scaling_check(counts.active - counts.embedding, float(tokens))
    if scaling.warning():
        warnings.append({"code": "P203", "message": scaling.warning()})
    stage_warnings, deploy, alignment = _stages_findings(spec)
    warnings.extend(stage_warnings)
    data_stage = data_estimate(spec)
    warnings.extend(data_findings(spec, data_stage))
    common = _common(spec, work, precision, overrides)
    common["model"]["hardware_flops_per_token"] = _sig(chosen.time.hardware_flops_per_token)
    data = {
        **common,
        "layout": chosen.layout.contract(),
        "memory": chosen.memory.contract(),
        "time": _time_contract(chosen, spec, work),
        "candidates": [_candidate(e, spec, work) for e in candidates],
        "warnings": classified(warnings),
        "scaling": scaling.contract(),
        "deploy": deploy,
        "alignment": alignment,
        "search": result.summary() if result else None,
        "searched": searching,
        "reliability": budget.contract() if budget is not None else None,
        "data": data_stage,
    }
    return Plan.model_validate(data)


def _passes_rules(spec: Spec, layout: Layout) -> bool:
    """The validate phase's parallel rules accept this layout (no error findings)."""
    from specc.diagnostics.rules import RULES
    from specc.diagnostics.rules import parallel_rules

    candidate = spec.model_copy(update={"parallel": layout.to_parallel_spec()})
    checks = [rule.check for rule in RULES if getattr(rule.check, "__module__", "") == parallel_rules.__name__]
    return not any(f.severity == "error" for check in checks for f in check(candidate))


def plan_json(plan: Plan) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(plan.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
