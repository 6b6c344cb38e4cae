"""Deployment memory: quantized weights + KV cache at max_batch x max_context + draft model.

Serving is tensor-parallel over the target's `count` devices: weights and KV heads split evenly
(the usual vLLM/TGI layout), so per-device figures divide by `count`.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.catalog import load_catalog
from specc.plan import mla
from specc.plan.memory import GIB
from specc.plan.params import ParameterCount, count_parameters
from specc.spec.deploy import DeployTarget, serving_context
from specc.spec.model import ModelSpec

KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}

SERVING_RESERVE_GIB = 1.5
"""CUDA context, CUDA graphs and the sampler's workspace of a serving engine (uncertain; vLLM's
profiling run typically leaves 1-2 GiB outside weights and KV cache)."""


def weight_bytes_per_param(quantization: str, group_size: int) -> float:
    """Bytes per quantized linear weight, scales included.

    int8 / fp8: 1 byte (+ per-channel scales, negligible). NF4 (Dettmers et al. 2023, QLoRA sec. 2) and
    int4 groups (compressed-tensors W4A16): 4 bits + one 16-bit scale per block. GPTQ (Frantar et al.
    2023): 4 bits + 16-bit scale and 4-bit zero per group (specc's GPTQ is symmetric, without the zero;
    the estimate keeps the general layout). none: bf16.
    """
    if quantization in ("int8", "fp8"):
        return 1.0
    if quantization in ("nf4", "int4"):
        return 0.5 + 2.0 / group_size
    if quantization == "gptq":
        return 0.5 + 2.5 / group_size
    return 2.0


def model_weight_bytes(counts: ParameterCount, model: ModelSpec, quantization: str, group_size: int) -> float:
    """Linear layers quantized; embeddings, output head and norms stay bf16 (bitsandbytes and GPTQ
    leave `lm_head` and embeddings unquantized by default)."""
    kept = counts.embedding + model.num_layers * counts.norms_per_layer + counts.final_norm
    linear = counts.total - kept
    return linear * weight_bytes_per_param(quantization, group_size) + kept * 2.0


def kv_cache_bytes(model: ModelSpec, batch: int, context: int, dtype: str, rolling_window: bool = True) -> float:
    """K and V per layer: 2 x kv_heads x head_dim per token (Pope et al. 2022, sec. 3.1), or MLA's latent
    d_c + d_h^R (`mla.kv_cache_elements`, DeepSeek-V2 Table 1), capped by a
    sliding window when the cache rolls (serving engines such as vLLM keep only the window;
    specc's own `KVCache`, used by PPO rollouts, keeps every position: `rolling_window=False`)."""
    capped = rolling_window and model.sliding_window
    tokens = min(context, model.sliding_window) if capped else context
    return mla.kv_cache_elements(model) * model.num_layers * tokens * batch * KV_BYTES[dtype]


@dataclass(frozen=True)
class ServingEstimate:
    name: str
    accelerator: str
    count: int
    weights: float
    kv_cache: float
    draft: float
    capacity_gib: float

    @property
    def per_device_gib(self) -> float:
        return (self.weights + self.kv_cache + self.draft) / self.count / GIB + SERVING_RESERVE_GIB

    @property
    def fits(self) -> bool:
        return self.per_device_gib <= self.capacity_gib

    def contract(self) -> dict:
        return {"name": self.name, "accelerator": self.accelerator, "count": self.count,
                "weights_gib": round(self.weights / GIB, 4), "kv_cache_gib": round(self.kv_cache / GIB, 4),
                "draft_gib": round(self.draft / GIB, 4), "per_device_gib": round(self.per_device_gib, 4),
                "capacity_gib": round(self.capacity_gib, 4), "fits": self.fits}


def estimate_target(model: ModelSpec, target: DeployTarget) -> ServingEstimate:
    """Memory of one deployment target."""
    counts = count_parameters(model)
    weights = model_weight_bytes(counts, model, target.quantization, target.group_size)
    context = serving_context(target, model)
    kv = kv_cache_bytes(model, target.max_batch, context, target.kv_cache_dtype)
    draft = 0.0
    if target.speculative is not None and isinstance(target.speculative.draft, ModelSpec):
        draft_model = target.speculative.draft
        draft = model_weight_bytes(count_parameters(draft_model), draft_model, "none", target.group_size)
        draft += kv_cache_bytes(draft_model, target.max_batch, context, target.kv_cache_dtype)
    accelerator = load_catalog().get(target.accelerator)
    capacity = accelerator.memory_gib if accelerator else 0.0
    return ServingEstimate(name=target.name, accelerator=target.accelerator, count=target.count, weights=weights,
                           kv_cache=kv, draft=draft, capacity_gib=capacity)
