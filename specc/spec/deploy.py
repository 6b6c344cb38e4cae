"""Spec section `deploy`: export, quantization, serving, speculative decoding."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.model import ModelSpec
from specc.spec.types import Identifier, Length, PositiveCount, PositiveLength


class SpeculativeSpec(SpecModel):
    """Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) with a small draft model."""

    draft: ModelSpec | str
    """The draft model: an architecture (trained by distillation from the target) or a checkpoint path."""
    num_tokens: Annotated[Length, Field(ge=1, le=16)] = 4
    """Tokens the draft proposes per verification step."""


class DeployTarget(SpecModel):
    """One deployment: an exported, possibly quantized model on serving hardware."""

    name: Identifier
    format: Literal["hf", "safetensors"] = "hf"
    """`hf`: a Hugging Face-compatible folder (LlamaForCausalLM: dense, RoPE, RMSNorm, SwiGLU, full
    attention, no muP), in full precision; `safetensors`: specc's layout of the served (possibly
    quantized) weights and its config, for any model."""
    quantization: Literal["none", "int8", "nf4", "gptq", "fp8"] = "none"
    """Weight quantization: int8 per-channel, NF4 blocks (Dettmers et al. 2023). `gptq` (Frantar et al.
    2023) and `fp8` are sized by the planner's serving estimate but not produced by the deploy stage:
    validate rejects them (see `specc.spec.capabilities.DEPLOY_QUANTIZATIONS`)."""
    group_size: PositiveCount = 64
    """Block size for nf4/gptq scales."""
    accelerator: str = "h100-sxm"
    """Serving accelerator (catalog id); with `count`, `max_batch`, `max_context` and `kv_cache_dtype`
    it sizes the plan's serving-memory estimate (the deploy stage exports and measures; it does not serve)."""
    count: PositiveCount = 1
    """Serving devices (tensor-parallel)."""
    max_batch: PositiveCount = 8
    """Concurrent sequences."""
    max_context: PositiveLength | None = None
    """Longest prompt + generation in tokens, at most `model.max_seq_len`; default `model.max_seq_len`."""
    kv_cache_dtype: Literal["bf16", "fp16", "fp8", "int8"] = "bf16"
    """KV-cache element type assumed by the serving-memory estimate."""
    speculative: SpeculativeSpec | None = None


class DeploySpec(SpecModel):
    """Deployment targets."""

    targets: list[DeployTarget] = Field(default=[], min_length=0)


def serving_context(target: DeployTarget, model: ModelSpec) -> int:
    """Tokens of context a target serves: its `max_context`, or the model's whole context."""
    return target.max_context if target.max_context is not None else model.max_seq_len
