"""DeepSeek-style architecture terms: multi-head latent attention and multi-token prediction.

Multi-head latent attention (MLA; DeepSeek-V2, Liu et al. 2024, sec. 2.1.2-2.1.3, eqs. 9-19; V3 sec.
2.1.1): per token, a down-projection W^DKV (h -> d_c) and the shared rotary key W^KR (h -> d_h^R) form
the cached latent; up-projections W^UK, W^UV (d_c -> n_h x d_h each, one `wkv_b` matrix) restore
per-head keys and values; queries go through W^DQ (h -> d_c') and W^UQ, W^QR (d_c' -> n_h x (d_h +
d_h^R)), or one full-rank W^Q without `q_lora_rank`; W^O (n_h x d_h^v -> h). RMSNorms sit on both
latents (DeepSeek-V2's released modelling code, `q_a_layernorm`, `kv_a_layernorm`). Attention itself
runs on n_h heads of query/key width d_h + d_h^R and value width d_h^v, as training kernels do (the
weight-absorption trick of V2 sec. 2.1.2 is an inference optimisation).

Multi-token prediction (MTP; DeepSeek-V3, 2024, sec. 2.2, eqs. 21-25): module k of D holds RMSNorms
on the previous depth's hidden state and on the next token's embedding, a projection M_k (2h -> h)
of their concatenation, one transformer block, and shares the embedding and output head with the
main model; its cross-entropy predicts token i + k + 1. The V3 paper counts its MTP module apart:
671B main model + 14B MTP on Hugging Face (which stores a copy of embedding and head with it).

Pure Python, torch-free; used by `params`, `memory`, `timing`, `fp8` and `serving`.
"""

from __future__ import annotations

from specc.spec import parallel_dims as dims
from specc.spec.model import ModelSpec


def qk_head_dim(model: ModelSpec) -> int:
    """Per-head query/key width the attention kernel runs: d_h + d_h^R under MLA, else head_dim."""
    return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim if model.mla else model.head_size


def v_head_dim(model: ModelSpec) -> int:
    """Per-head value (and attention output) width: d_h^v under MLA, else head_dim."""
    return model.mla.v_head_dim if model.mla else model.head_size


def kv_heads_computed(model: ModelSpec) -> int:
    """Key/value heads the attention kernel reads: MLA up-projects a key and a value for every head."""
    return model.num_heads if model.mla else model.kv_heads


def latent_norm_params(model: ModelSpec) -> int:
    """RMSNorm weights on the MLA latents (d_c' + d_c): elementwise, not matmuls."""
    mla = model.mla
    if mla is None:
        return 0
    return mla.kv_lora_rank + (mla.q_lora_rank or 0)


def mla_matrices(model: ModelSpec) -> dict[str, tuple[int, int, str]]:
    """MLA's weight matrices per layer: name -> (in, out, how tensor parallelism splits them). The
    down-projections are replicated over tp and the up- and output projections split by heads, as
    Megatron-Core's MLA runs them (`linear_q_down_proj`, `linear_kv_down_proj` duplicated)."""
    mla, h, a = model.mla, model.hidden_size, model.num_heads
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    matrices = {}
    if mla.q_lora_rank:
        matrices["wq_a"] = (h, mla.q_lora_rank, "none")
        matrices["wq_b"] = (mla.q_lora_rank, a * qk, "out")
    else:
        matrices["wq"] = (h, a * qk, "out")
    matrices["wkv_a"] = (h, mla.kv_lora_rank + mla.qk_rope_head_dim, "none")
    matrices["wkv_b"] = (mla.kv_lora_rank, a * (mla.qk_nope_head_dim + mla.v_head_dim), "out")
    matrices["wo"] = (a * mla.v_head_dim, h, "in")
    return matrices


def mla_params(model: ModelSpec) -> tuple[int, int]:
    """(all attention parameters of one layer, the part replicated over tp): matrices + latent norms."""
    matrices = mla_matrices(model)
    total = sum(k * n for k, n, _ in matrices.values()) + latent_norm_params(model)
    replicated = sum(k * n for k, n, split in matrices.values() if split == "none") + latent_norm_params(model)
    return total, replicated


def replicated_matmul_flops_per_token(model: ModelSpec) -> float:
    """Training FLOPs per token of MLA's tp-replicated down-projections over all layers and MTP
    blocks, 6 per weight (Kaplan et al. 2020, eq. 2.2): what every tp rank computes whole."""
    if model.mla is None:
        return 0.0
    replicated = sum(k * n for k, n, split in mla_matrices(model).values() if split == "none")
    return 6.0 * (model.num_layers + model.mtp_depth) * replicated


def attention_flops_per_key(model: ModelSpec, layers: int) -> float:
    """Training FLOPs per token per attended key: forward QK^T 2·n_h·d_qk and AV 2·n_h·d_v per key per
    layer, training 3x forward (PaLM App. B): 6·L·n_h·(d_qk + d_v), which is 12·L·H·Q for d_qk = d_v."""
    return 6.0 * layers * model.num_heads * (qk_head_dim(model) + v_head_dim(model))


def kv_cache_elements(model: ModelSpec) -> float:
    """Cached elements per token per layer: d_c + d_h^R under MLA (DeepSeek-V2 Table 1: (d_c + d_h^R)·l,
    4.5·d_h·l for V2's shapes), 2 x kv_heads x head_dim otherwise (Pope et al. 2022, sec. 3.1)."""
    if model.mla:
        return float(model.mla.kv_lora_rank + model.mla.qk_rope_head_dim)
    return 2.0 * model.kv_heads * model.head_size


def attention_activation_elements(model: ModelSpec, eager_kv_expanded: bool) -> tuple[float, float]:
    """(elements per token kept for backward inside the tp region, elements outside it) by the
    attention part of one layer without recompute: Q, K, V and the attention output (Korthikanti's
    2sb(2a + 2g)d generalised to d_qk, d_v; eager attention keeps K and V expanded to all heads), and
    under MLA the latents before and after their RMSNorm (the down-projections' outputs, replicated
    over tp) and the normed latents the up-projections read."""
    a, qk, v = model.num_heads, qk_head_dim(model), v_head_dim(model)
    kv = a if eager_kv_expanded else kv_heads_computed(model)
    inside = a * qk + kv * qk + kv * v + a * v
    outside = 0.0
    if model.mla:
        mla = model.mla
        outside = 2.0 * ((mla.q_lora_rank or 0) + mla.kv_lora_rank + mla.qk_rope_head_dim)
    return inside, outside


def mtp_block_is_moe(model: ModelSpec, depth: int) -> bool:
    """MTP module k's block continues the layer sequence (id num_layers + k), so it is an MoE block
    where that id would be (DeepSeek-V3's layer 61 is an MoE layer)."""
    return dims.is_moe_layer(model, model.num_layers + depth)


def mtp_extra_params(model: ModelSpec) -> tuple[int, int]:
    """(parameters, of which norms) per MTP module beyond its block: RMSNorms on h and on the
    embedding (2h; V3 eq. 21) and on the shared head's input (h), and M_k (2h x h)."""
    h = model.hidden_size
    norms = 3 * h * (2 if model.norm == "layernorm" else 1)
    return 2 * h * h + norms, norms
