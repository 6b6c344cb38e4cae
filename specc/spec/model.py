"""Spec section `model`: a decoder-only transformer, dense or mixture-of-experts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Number, PositiveCount, PositiveLength


class MoESpec(SpecModel):
    """Mixture-of-experts feed-forward layers (Switch/GShard-style top-k routing)."""

    num_experts: Annotated[int, Field(ge=2)]
    """Routed experts per MoE layer."""
    top_k: Annotated[int, Field(ge=1)] = 2
    """Experts each token is routed to."""
    expert_ffn_hidden_size: PositiveCount | None = None
    """FFN width of each expert; defaults to the model's `ffn_hidden_size`."""
    num_shared_experts: Annotated[int, Field(ge=0)] = 0
    """Always-active experts (DeepSeekMoE-style)."""
    capacity_factor: Annotated[Number, Field(gt=0)] = 1.25
    """Expert capacity = capacity_factor x tokens x top_k / num_experts; overflow tokens are dropped."""
    aux_loss_weight: Annotated[Number, Field(ge=0)] = 0.01
    """Weight of the load-balancing auxiliary loss (Switch Transformer, eq. 4)."""
    layer_frequency: Annotated[int, Field(ge=1)] = 1
    """Every n-th layer is an MoE layer (1 = all layers)."""
    first_k_dense: Annotated[int, Field(ge=0)] = 0
    """The first k layers keep a dense FFN of `ffn_hidden_size` whatever `layer_frequency` says
    (DeepSeek-V2/V3's `first_k_dense_replace`: V3 has 3 dense layers, then 58 MoE layers)."""


class MLASpec(SpecModel):
    """Multi-head latent attention (DeepSeek-V2, Liu et al. 2024, sec. 2.1): keys and values are
    up-projected from a shared low-rank latent, queries optionally too, and RoPE runs on a separate
    `qk_rope_head_dim` slice whose key is shared by all heads. Planned only: validate rejects it
    for specc's runtimes (`specc.spec.capabilities.planned_only_features`)."""

    kv_lora_rank: PositiveCount
    """Width of the compressed key/value latent c_KV (d_c; DeepSeek-V2/V3: 512). The KV cache holds
    this plus `qk_rope_head_dim` per token and layer."""
    q_lora_rank: PositiveCount | None = None
    """Width of the compressed query latent c_Q (d_c'; V2/V3: 1536); omit for a full-rank W_Q (V2-Lite)."""
    qk_rope_head_dim: PositiveCount = 64
    """Per-head width of the rotary query/key part (d_h^R)."""
    qk_nope_head_dim: PositiveCount = 128
    """Per-head width of the query/key part without position encoding (d_h)."""
    v_head_dim: PositiveCount = 128
    """Per-head width of the values (and of the output projection's input)."""


class InitSpec(SpecModel):
    """Weight initialisation."""

    std: Annotated[Number, Field(gt=0)] = 0.02
    """Standard deviation of the normal init."""
    scaled_residual: bool = True
    """Scale output projections by 1/sqrt(2 x num_layers) (GPT-2, Radford et al. 2019)."""
    mup_base_width: PositiveCount | None = None
    """Enable muP-style width scaling relative to this base hidden size (Yang et al. 2022)."""


class ModelSpec(SpecModel):
    """Decoder-only transformer architecture."""

    num_layers: PositiveCount
    """Transformer blocks."""
    hidden_size: PositiveCount
    """Model width (d_model)."""
    num_heads: PositiveCount
    """Attention (query) heads."""
    num_kv_heads: PositiveCount | None = None
    """Key/value heads: equal to num_heads for MHA, 1 for MQA, in between for GQA. Default: num_heads."""
    head_dim: PositiveCount | None = None
    """Per-head width; default hidden_size / num_heads."""
    ffn_hidden_size: PositiveCount
    """Feed-forward inner width (per gate for SwiGLU)."""
    activation: Literal["relu", "gelu", "swiglu"] = "swiglu"
    """FFN activation; `swiglu` uses a gated FFN with three matrices (Shazeer 2020)."""
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    """Normalisation layer (pre-norm)."""
    norm_eps: Annotated[Number, Field(gt=0)] = 1e-5
    """Normalisation epsilon."""
    position: Literal["rope", "alibi", "sinusoidal", "learned"] = "rope"
    """Position encoding."""
    rope_theta: Annotated[Number, Field(gt=0)] = 10000.0
    """RoPE base frequency (Llama 3 uses 500000)."""
    vocab_size: PositiveCount
    """Embedding rows; pad to a multiple of 128 x tp for fast matmuls."""
    max_seq_len: PositiveLength
    """Longest sequence the model supports (the learned position table size)."""
    tie_embeddings: bool = False
    """Share the input embedding and output head weights."""
    attention: Literal["sdpa", "flash", "eager"] = "sdpa"
    """Attention implementation: `sdpa` (PyTorch picks flash/memory-efficient kernels), `flash`, or `eager` (materialises s x s scores)."""
    attention_kernel: Literal["auto", "flash2", "cudnn", "flash3"] = "auto"
    """Which fused attention kernel SDPA runs (with `attention: sdpa`): `auto` (torch's own order, which on
    GPUs is FlashAttention-2), `flash2`, `cudnn` (cuDNN fused attention, GPUs only) or `flash3`
    (FlashAttention-3, Hopper; planned only: validate rejects it, specc's runtime does not install it).
    Masked attention (ALiBi, sliding windows, context parallel): specc's runtime passes SDPA a mask and
    leaves the kernel to it, so validate refuses a named kernel there (R312); the planner charges the
    named kernel, as stacks that run it per ring step do (Transformer Engine's context parallelism)."""
    sliding_window: PositiveLength | None = None
    """Attend only to this many previous tokens (Mistral-style); default full causal."""
    qkv_bias: bool = False
    """Bias on the query/key/value projections (Qwen-style)."""
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    """Dropout probability (0 for pretraining at scale)."""
    moe: MoESpec | None = None
    """Mixture-of-experts settings; omit for a dense model."""
    mla: MLASpec | None = None
    """Multi-head latent attention instead of MHA/GQA (DeepSeek-V2/V3); `num_heads` counts its heads,
    `num_kv_heads` and `head_dim` do not apply. Planned only (validate rejects it for a runtime target)."""
    mtp_depth: Annotated[int, Field(ge=0)] = 0
    """Multi-token prediction modules (DeepSeek-V3 sec. 2.2: D = 1): each adds a norm pair, a 2h x h
    projection and one transformer block, shares the embedding and output head, and predicts one more
    token ahead. Planned only (validate rejects it for a runtime target)."""
    init: InitSpec = InitSpec()
    """Weight initialisation."""
    init_from: str | None = None
    """A local Hugging Face model directory (config.json, safetensors weights, tokenizer.json) to
    start from, relative to the spec file: the architecture, weights and tokenizer come from it,
    so the other model fields may be left out (those given must agree with config.json).
    Llama, Mistral, Qwen2 and Mixtral. A Hub id is refused: download it first."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads with the MHA default applied."""
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        """Per-head width with the default applied."""
        return self.head_dim or self.hidden_size // self.num_heads

