"""Memory and step time of the alignment stages, as specc's alignment runtime runs them.

Pure Python (no torch). The runtime (`specc.runtime.align.distributed`) runs every alignment stage
with one process per device over all the cluster's devices, FSDP2-sharding each model it holds
over all of them (ZeRO-3; no tensor parallelism: `Capabilities.alignment_parallel_axes`), with the
spec's `parallel.recompute` on the trained models' blocks, in `Capabilities.alignment_precision`.
So a trained model is charged exactly as a pretraining layout `dp = devices, fsdp, micro_batch =
parallel.micro_batch (at most the stage's sequences per device), grad_accum = the rest`
(`specc.plan.memory.pipeline_stage_memory`: fp32 sharded weights + gradients + AdamW state = 16 B/param over dp (Rajbhandari et al. 2020, sec. 5),
activations per Korthikanti et al. 2022 with or without recompute, the loss's logits, the FSDP
gather buffers, the CUDA context), the figures FSDPMemTracker checks for pretraining
(tests/plan/test_plan_tracker.py) and for the alignment stages themselves
(benchmarks/align_vs_tracker.py). A frozen model (DPO's held reference, PPO's reference and reward
model) is sharded the same way with no gradients or optimizer state: its fp32 weights, 4 B/param
over the devices (FSDP2 keeps the sharded parameters in fp32 and casts when it gathers).

Stages:
- sft: the policy trained on `batch_size` sequences per step;
- reward_model: a trunk + scalar head trained on 2 x `batch_size` sequences (chosen and rejected);
  charged as a language model of the same trunk, its vocabulary loss an upper bound (the scalar
  head has none);
- dpo: the policy on 2 x `batch_size` sequences, plus the frozen reference unless
  `precompute_reference` (then the reference is held alone, before training, and never with the policy);
- ppo: policy and value trained together (one backward), reference and reward frozen, all four
  colocated (the only placement the runtime executes; validate R265 refuses `colocate: false`);
  during the rollout the policy's weights are gathered whole in the compute dtype for the KV-cache
  decoder, beside the rollouts' KV cache;
- constitutional: one frozen model generating on one device (rank 0), plus its KV cache.

Step time: the trained model's step as `specc.plan.timing.step_time` prices the same layout; a frozen
model's forward costs a third of its training compute (2 of the 6 FLOPs per parameter and token,
Kaplan et al. 2020); PPO's rollout is charged as forward FLOPs of the generated tokens, which
underestimates a memory-bound decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from specc.plan.estimate import Estimate, Workload, estimate_layout
from specc.plan.layout import Layout
from specc.plan.memory import GIB
from specc.plan.params import count_parameters
from specc.plan.serving import kv_cache_bytes
from specc.spec.alignment import stage_seq_len
from specc.spec.capabilities import Capabilities, capabilities_for
from specc.spec.derived import cluster_accelerator, devices_per_node, total_devices
from specc.spec.parallel import ParallelSpec
from specc.spec.root import Spec

FROZEN_BYTES_PER_PARAM = 4.0
"""A frozen model's sharded fp32 weights (FSDP2 casts to the compute dtype only when it gathers)."""


@dataclass(frozen=True)
class HeldModel:
    role: str
    trained: bool
    params: int
    devices: int
    """Devices this model's states are sharded over."""


def _capabilities(spec: Spec) -> Capabilities | None:
    accelerator = cluster_accelerator(spec.cluster)
    return capabilities_for(accelerator) if accelerator is not None else None


def _parallel(spec: Spec) -> ParallelSpec:
    return spec.parallel if isinstance(spec.parallel, ParallelSpec) else ParallelSpec()


def alignment_devices(spec: Spec) -> int:
    """Devices an alignment stage runs on: every device of the cluster, one process each."""
    return total_devices(spec.cluster)


def alignment_precision(spec: Spec) -> str:
    """The precision the alignment runtime computes in for this spec (`Capabilities.alignment_precision`)."""
    capabilities = _capabilities(spec)
    requested = _parallel(spec).precision
    return capabilities.alignment_precision(requested) if capabilities else "fp32"


def held_models(spec: Spec, stage, devices: int) -> list[HeldModel]:
    params = count_parameters(spec.model).total
    head = spec.model.hidden_size + 1
    if stage.type == "sft":
        return [HeldModel("policy", True, params, devices)]
    if stage.type == "reward_model":
        return [HeldModel("reward", True, params + head, devices)]
    if stage.type == "dpo":
        held = [HeldModel("policy", True, params, devices)]
        return held if stage.precompute_reference else held + [HeldModel("reference", False, params, devices)]
    if stage.type == "ppo":
        return [HeldModel("policy", True, params, devices), HeldModel("value", True, params + head, devices),
                HeldModel("reference", False, params, devices), HeldModel("reward", False, params + head, devices)]
    return [HeldModel("generator", False, params, 1)]


def trained_sequences(stage) -> int:
    """Sequences one optimizer step's forward holds, over all ranks (DPO and the reward model score
    chosen and rejected responses in one batch)."""
    if stage.type == "ppo":
        return stage.rollout_batch
    return stage.batch_size * (2 if stage.type in ("dpo", "reward_model") else 1)


def micro_batching(stage, local: int, micro_batch: int) -> tuple[int, int]:
    """(sequences per forward, forwards per step) of a rank's `local` sequences, as
    `AlignRuntime.micro_batches` cuts them: `parallel.micro_batch` sequences (DPO and reward-model
    pairs: two sequences each, at least one pair); PPO runs a rank's rollouts in one forward."""
    if stage.type == "ppo":
        return local, 1
    per_item = 2 if stage.type in ("dpo", "reward_model") else 1
    micro = min(local, max(1, micro_batch // per_item) * per_item)
    return micro, math.ceil(local / micro)


def training_estimate(spec: Spec, stage, devices: int, precision: str) -> Estimate:
    """The trained policy's step as the pretraining planner prices the same program (module docstring)."""
    parallel = _parallel(spec)
    local = max(1, math.ceil(trained_sequences(stage) / devices))
    micro, accum = micro_batching(stage, local, parallel.micro_batch)
    seq_len = stage_seq_len(stage, spec.schedule.seq_len, spec.model.max_seq_len)
    layout = Layout(dp=devices, fsdp=devices > 1, micro_batch=micro, grad_accum=accum,
                    recompute=parallel.recompute, selective_policy=parallel.selective_policy, precision=precision,
                    loss=parallel.loss, loss_chunk_tokens=parallel.loss_chunk_tokens)
    work = Workload(spec.model, seq_len, micro * accum * devices, cluster_accelerator(spec.cluster), devices,
                    min(devices, devices_per_node(spec.cluster)))
    return estimate_layout(work, layout)


def _frozen_forward_s(estimate: Estimate) -> float:
    """A frozen model's forward over the same batch: a third of the trained model's compute."""
    return estimate.time.compute / 3.0


def alignment_stage_memory(spec: Spec, stage, devices: int | None = None, precision: str | None = None) -> dict:
    """Per-device memory and step time of one alignment stage, with the placement it runs.

    By default as the alignment runtime runs on the spec's cluster (every device, FSDP2,
    `alignment_precision`); `devices`/`precision` size another world size or precision."""
    devices = devices or alignment_devices(spec)
    precision = precision or alignment_precision(spec)
    accelerator = cluster_accelerator(spec.cluster)
    capacity = accelerator.memory_gib if accelerator else 0.0
    seq_len = stage_seq_len(stage, spec.schedule.seq_len, spec.model.max_seq_len)
    if stage.type == "constitutional":
        return _generator_entry(spec, stage, precision, seq_len, capacity)
    models = held_models(spec, stage, devices)
    estimate = training_estimate(spec, stage, devices, precision)
    memory = estimate.memory
    frozen = sum(m.params * FROZEN_BYTES_PER_PARAM / m.devices for m in models if not m.trained)
    states = memory.params + memory.grads + memory.optimizer
    work = memory.activations + memory.logits + memory.fsdp_buffers
    step_s = estimate.time.step_s
    kv = 0.0
    if stage.type == "ppo":
        # the value model trains in the same backward: its states and activations join the policy's
        states, work = 2 * states, 2 * work
        compute_bytes = 4.0 if precision == "fp32" else 2.0
        kv = kv_cache_bytes(spec.model, math.ceil(stage.rollout_batch / devices), seq_len,
                            "fp16" if precision != "fp32" else "bf16", rolling_window=False)
        kv *= 2.0 if precision == "fp32" else 1.0
        rollout = states + models[0].params * compute_bytes + kv
        # rollout (decode: forward FLOPs of the generated tokens), scoring by the four models, then
        # ppo_epochs updates of policy and value
        decode = estimate.time.compute / 3.0 * stage.max_new_tokens / seq_len
        step_s = decode + 4 * _frozen_forward_s(estimate) + stage.ppo_epochs * 2 * step_s
        peak = max(states + work, rollout) + frozen + memory.reserve
    else:
        if any(not m.trained for m in models):
            step_s += _frozen_forward_s(estimate)
        peak = states + work + frozen + memory.reserve
    placement = (f"all {len(models)} model(s) FSDP2-sharded over the same {devices} device(s)"
                 if devices > 1 else f"all {len(models)} model(s) on one device")
    return {"stage": stage.name, "type": stage.type, "placement": placement, "precision": precision,
            "seq_len": seq_len, "devices": devices,
            "models": [{"role": m.role, "trained": m.trained, "params": m.params, "devices": m.devices,
                        "gib_per_device": round(m.params * (16.0 if m.trained else FROZEN_BYTES_PER_PARAM)
                                                / m.devices / GIB, 4)} for m in models],
            "recompute": _parallel(spec).recompute,
            "activations_gib": round(memory.activations * (2 if stage.type == "ppo" else 1) / GIB, 4),
            "logits_gib": round(memory.logits / GIB, 4), "fsdp_buffers_gib": round(memory.fsdp_buffers / GIB, 4),
            "kv_cache_gib": round(kv / GIB, 4), "reserve_gib": round(memory.reserve / GIB, 4),
            "per_device_gib": round(peak / GIB, 4), "capacity_gib": round(capacity, 4),
            "fits": peak / GIB <= capacity, "step_s": float(f"{step_s:.4g}")}


def _generator_entry(spec: Spec, stage, precision: str, seq_len: int, capacity: float) -> dict:
    """The constitutional stage: one model generating on rank 0's device, with its KV cache."""
    params = count_parameters(spec.model).total
    weights = params * FROZEN_BYTES_PER_PARAM
    kv = kv_cache_bytes(spec.model, 1, seq_len, "fp16" if precision != "fp32" else "bf16", rolling_window=False)
    kv *= 2.0 if precision == "fp32" else 1.0
    reserve = 1.0 * GIB
    peak = weights + kv + reserve
    return {"stage": stage.name, "type": stage.type, "placement": "one model on one device (rank 0)",
            "precision": precision, "seq_len": seq_len, "devices": 1,
            "models": [{"role": "generator", "trained": False, "params": params, "devices": 1,
                        "gib_per_device": round(weights / GIB, 4)}],
            "recompute": "none", "activations_gib": 0.0, "logits_gib": 0.0, "fsdp_buffers_gib": 0.0,
            "kv_cache_gib": round(kv / GIB, 4), "reserve_gib": 1.0, "per_device_gib": round(peak / GIB, 4),
            "capacity_gib": round(capacity, 4), "fits": peak / GIB <= capacity, "step_s": None}


def alignment_memory(spec: Spec) -> list[dict]:
    """One entry per alignment stage, in spec order (for the plan's `alignment` field)."""
    return [alignment_stage_memory(spec, stage) for stage in spec.alignment]
