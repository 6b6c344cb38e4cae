"""Spec section `deploy`: export, quantization, serving, speculative decoding."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.model import ModelSpec
from specc.spec.types import Identifier, PositiveCount, PositiveLength


class SpeculativeSpec(SpecModel):
    """Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) with a small draft model."""

    draft: ModelSpec | str
    """The draft model: an architecture (trained by distillation from the target) or a checkpoint path."""
    num_tokens: Annotated[int, Field(ge=1, le=16)] = 4
    """Tokens the draft proposes per verification step."""


class DeployTarget(SpecModel):
    """One deployment: an exported, possibly quantized model on serving hardware."""

    name: Identifier
    format: Literal["hf", "safetensors"] = "hf"
    """`hf`: a Hugging Face-compatible folder; `safetensors`: weights and specc's config only."""
    quantization: Literal["none", "int8", "nf4", "gptq", "fp8"] = "none"
    """Weight quantization: int8 per-channel, NF4 blocks (Dettmers et al. 2023), GPTQ (Frantar et al. 2023), fp8."""
    group_size: PositiveCount = 64
    """Block size for nf4/gptq scales."""
    accelerator: str = "h100-sxm"
    """Serving accelerator (catalog id)."""
    count: PositiveCount = 1
    """Serving devices (tensor-parallel)."""
    max_batch: PositiveCount = 8
    """Concurrent sequences."""
    max_context: PositiveLength = 4096
    """Longest prompt + generation."""
    kv_cache_dtype: Literal["bf16", "fp16", "fp8", "int8"] = "bf16"
    speculative: SpeculativeSpec | None = None


class DeploySpec(SpecModel):
    """Deployment targets."""

    targets: list[DeployTarget] = Field(default=[], min_length=0)
