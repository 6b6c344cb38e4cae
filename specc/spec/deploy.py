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
    """`hf`: a Hugging Face folder (Llama, Mistral, Qwen2 or Mixtral config, tokenizer with the chat
    template, generation config) that `transformers`, vLLM and SGLang load without specc; quantized
    weights in the compressed-tensors format. `safetensors`: specc's own layout of the served weights
    and its config, for any model, reloaded only by specc."""
    quantization: Literal["none", "int8", "int4", "gptq", "nf4", "fp8"] = "none"
    """Weight-only quantization of the blocks' linear layers. `format: hf`: `int8` (per output channel),
    `int4` (groups of `group_size`, round to nearest) or `gptq` (the same int4 groups chosen by GPTQ,
    Frantar et al. 2023, on held-out training text). `format: safetensors`: `int8` or `nf4` (NF4
    blocks, Dettmers et al. 2023). `fp8` is sized by the planner's serving estimate but not produced:
    validate rejects it (see `specc.spec.capabilities.DEPLOY_FORMAT_QUANTIZATIONS`)."""
    group_size: PositiveCount = 64
    """Input features per scale for int4/gptq, weights per block for nf4."""
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
