"""Memory of the alignment stages: every model a stage holds at once, and where it sits.

Pure Python (no torch). Per model, with mixed precision and AdamW (ZeRO paper, Rajbhandari
et al. 2020, section 3.1: 2 + 2 + 12 = 16 bytes per trained parameter, fp32 training 4 + 4 + 8):
- a trained model: compute weights + gradients + fp32 master weights and two Adam moments;
- a frozen model (reference, reward model): compute weights only.
Placement and precision are what specc's alignment runtime runs (`Capabilities.alignment_devices`,
`alignment_precision`: today one process on one device in fp32), not what alignment frameworks
(OpenRLHF, TRL + DeepSpeed) would shard; model states are divided over the devices that hold them. Activations follow Korthikanti
et al. 2022, eq. 1 (s b h (34 + 5 a s / h) bytes per layer without recomputation), for the
stage's batch spread over the data-parallel devices. SFT, DPO and PPO also back-propagate the
policy's log-probabilities over the vocabulary: the loss's working set as `parallel.loss` runs it
(`specc.plan.memory.logits_memory`: a chunk of logits with the chunked head, 12 B per logit of the
batch with the full logits), for the stage's sequences per trained device.

Stages:
- sft, reward_model: one trained model;
- dpo: the policy, plus a frozen reference unless `precompute_reference` (then the
  reference is held alone, before training, and never at the same time as the policy);
- ppo: policy and value model trained, reference and reward model frozen, plus the KV cache of
  the rollout batch. `colocate: true` puts all four on every device; otherwise the devices are
  split in half: policy + value on one half, reference + reward on the other;
- constitutional: one frozen model generating, plus its KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.plan.layout import Layout
from specc.plan.memory import GIB, logits_memory
from specc.plan.params import count_parameters
from specc.plan.serving import kv_cache_bytes
from specc.spec.alignment import stage_seq_len
from specc.spec.capabilities import Capabilities, capabilities_for
from specc.spec.derived import cluster_accelerator, total_devices
from specc.spec.parallel import ParallelSpec
from specc.spec.root import Spec

RESERVE_GIB = 1.0
"""CUDA context and allocator slack per device (uncertain: 0.5-2 GiB in practice)."""


@dataclass(frozen=True)
class HeldModel:
    role: str
    trained: bool
    params: int
    devices: int
    """Devices this model's states are sharded over."""


def _bytes_per_param(trained: bool, precision: str) -> float:
    compute = 4.0 if precision == "fp32" else 2.0
    if not trained:
        return compute
    return compute + compute + (8.0 if precision == "fp32" else 12.0)


def _activation_bytes(spec: Spec, sequences: float, seq_len: int, precision: str) -> float:
    """Korthikanti et al. 2022, eq. 1 (bf16/fp16 activations; fp32 doubles them)."""
    model = spec.model
    per_layer = seq_len * sequences * model.hidden_size * (34 + 5 * model.num_heads * seq_len / model.hidden_size)
    scale = 2.0 if precision == "fp32" else 1.0
    return per_layer * model.num_layers * scale


def _capabilities(spec: Spec) -> Capabilities | None:
    accelerator = cluster_accelerator(spec.cluster)
    return capabilities_for(accelerator) if accelerator is not None else None


def _parallel(spec: Spec) -> ParallelSpec:
    return spec.parallel if isinstance(spec.parallel, ParallelSpec) else ParallelSpec()


def _logits_bytes(spec: Spec, stage, sequences: float, seq_len: int, precision: str, tpu: bool) -> float:
    """The policy's loss working set (module docstring); stages without a vocabulary loss hold none."""
    if stage.type not in ("sft", "dpo", "ppo"):
        return 0.0
    parallel = _parallel(spec)
    layout = Layout(dp=1, micro_batch=sequences, precision=precision, loss=parallel.loss,
                    loss_chunk_tokens=parallel.loss_chunk_tokens)
    return logits_memory(spec.model, layout, seq_len, xla=tpu)


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
        trained_on = devices if stage.colocate else max(1, devices // 2)
        frozen_on = devices if stage.colocate else max(1, devices - trained_on)
        return [HeldModel("policy", True, params, trained_on), HeldModel("value", True, params + head, trained_on),
                HeldModel("reference", False, params, frozen_on), HeldModel("reward", False, params + head, frozen_on)]
    return [HeldModel("generator", False, params, devices)]


def stage_memory(spec: Spec, stage, devices: int | None = None, precision: str | None = None) -> dict:
    """Per-device memory of one alignment stage, with the placement it assumes.

    By default charged as the alignment runtime runs on the spec's accelerator (today one process,
    one device, fp32), not as the pretraining layout would shard it; `devices`/`precision` size
    another placement.
    """
    capabilities = _capabilities(spec)
    if devices is None:
        devices = capabilities.alignment_devices if capabilities else total_devices(spec.cluster)
    if precision is None:
        precision = capabilities.alignment_precision if capabilities else "fp32"
    models = held_models(spec, stage, devices)
    seq_len = stage_seq_len(stage, spec.schedule.seq_len, spec.model.max_seq_len)
    kv = 0.0
    if stage.type in ("ppo", "constitutional"):
        batch = stage.rollout_batch if stage.type == "ppo" else 1
        kv = kv_cache_bytes(spec.model, batch, seq_len, "fp16" if precision != "fp32" else "bf16",
                            rolling_window=False)
        kv *= 2.0 if precision == "fp32" else 1.0
    trained_devices = min((m.devices for m in models if m.trained), default=devices)
    batch = getattr(stage, "batch_size", None) or getattr(stage, "rollout_batch", 1)
    sequences = batch * (2 if stage.type in ("dpo", "reward_model") else 1)  # chosen + rejected
    activations = _activation_bytes(spec, sequences / trained_devices, seq_len, precision) \
        if stage.type != "constitutional" else 0.0
    accelerator = cluster_accelerator(spec.cluster)
    tpu = accelerator is not None and accelerator.kind == "tpu"
    logits = _logits_bytes(spec, stage, sequences / trained_devices, seq_len, precision, tpu)
    colocated = stage.type != "ppo" or stage.colocate
    per_model = [m.params * _bytes_per_param(m.trained, precision) / m.devices for m in models]
    trained_states = sum(b for m, b in zip(models, per_model) if m.trained)
    frozen_states = sum(b for m, b in zip(models, per_model) if not m.trained)
    # Split placement: the trained half also carries activations and the rollout KV cache, so
    # the fuller device is the larger of the two halves.
    busy = activations + logits + kv / trained_devices
    states_and_work = (trained_states + frozen_states + busy if colocated
                       else max(trained_states + busy, frozen_states))
    per_device = states_and_work + RESERVE_GIB * GIB
    capacity = accelerator.memory_gib if accelerator else 0.0
    placement = (f"all {len(models)} model(s) on the same {devices} device(s)" if colocated else
                 f"policy + value on {models[0].devices} device(s), reference + reward on {models[2].devices}")
    return {"stage": stage.name, "type": stage.type, "placement": placement, "precision": precision,
            "seq_len": seq_len,
            "models": [{"role": m.role, "trained": m.trained, "params": m.params, "devices": m.devices,
                        "gib_per_device": round(m.params * _bytes_per_param(m.trained, precision) / m.devices / GIB, 4)}
                       for m in models],
            "activations_gib": round(activations / GIB, 4), "logits_gib": round(logits / GIB, 4),
            "kv_cache_gib": round(kv / trained_devices / GIB, 4),
            "per_device_gib": round(per_device / GIB, 4), "capacity_gib": round(capacity, 4),
            "fits": per_device / GIB <= capacity}


def alignment_memory(spec: Spec) -> list[dict]:
    """One entry per alignment stage, in spec order (for the plan's `alignment` field)."""
    return [stage_memory(spec, stage) for stage in spec.alignment]
