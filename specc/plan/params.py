"""Model accounting: parameters (total, active, per component) and FLOPs per token.

The parameter count follows the project-wide architecture conventions (module docstring of
`specc.plan`), so it equals the torch model's `sum(p.numel())` exactly. The component split
mirrors Megatron-LM `theoretical_memory_usage.compute_weight_and_optimizer_memory`
(docs/formulas.md section 1). Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.plan import mla
from specc.spec import parallel_dims as dims
from specc.spec.attention_window import executed_keys_per_query
from specc.spec.model import ModelSpec


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a model, split the way memory and FLOP accounting needs them."""

    total: int
    active: int
    """Parameters one token touches: top_k routed + shared experts for MoE, else `total`."""
    embedding: int
    """Token embedding + untied output head + learned position table."""
    non_embedding: int
    token_embedding: int
    output_head: int
    """0 when tied to the token embedding."""
    positions: int
    attention_per_layer: int
    norms_per_layer: int
    dense_ffn_per_layer: int
    """One dense FFN (0 when every layer is MoE)."""
    expert_ffn: int
    """One expert FFN (0 for dense models)."""
    router_per_layer: int
    dense_layers: int
    moe_layers: int
    final_norm: int

    @property
    def experts_total(self) -> int:
        """Routed expert parameters over all MoE layers (what expert parallelism divides)."""
        return self.moe_layers * self.routed_experts * self.expert_ffn

    routed_experts: int = 0
    shared_experts: int = 0
    top_k: int = 0
    attention_replicated_per_layer: int = 0
    """Part of `attention_per_layer` replicated over tp: MLA's down-projections and latent norms."""
    mtp: int = 0
    """Parameters of the multi-token prediction modules (`model.mtp_depth`), included in `total`;
    the embedding and head they share are not counted again (`specc.plan.mla`)."""
    mtp_active: int = 0
    """Parameters of the MTP modules one token touches (included in `active`)."""
    mtp_experts: int = 0
    """Routed-expert parameters inside the MTP modules (part of `mtp`; what ep divides)."""
    mtp_norms: int = 0
    """Norm weights of the MTP modules (elementwise: no matmul FLOPs)."""

    @property
    def main_model(self) -> int:
        """`total` without the MTP modules: DeepSeek-V3's convention for its 671B."""
        return self.total - self.mtp


def _norm_params(model: ModelSpec) -> int:
    # RMSNorm: weight only; LayerNorm: weight + bias (project convention).
    return model.hidden_size * (2 if model.norm == "layernorm" else 1)


def _ffn_params(model: ModelSpec, width: int) -> int:
    # SwiGLU (Shazeer 2020): gate, up, down = 3 matrices; relu/gelu: up, down = 2.
    matrices = 3 if model.activation == "swiglu" else 2
    return matrices * model.hidden_size * width


def attention_params(model: ModelSpec) -> int:
    """Wq, Wk, Wv, Wo with GQA/MQA (Megatron: 2·h·h·(1 + g/a)·(q/h)) plus optional qkv biases;
    multi-head latent attention's matrices and latent norms under `model.mla` (`specc.plan.mla`)."""
    if model.mla is not None:
        return mla.mla_params(model)[0]
    h, d = model.hidden_size, model.head_size
    q, kv = model.num_heads * d, model.kv_heads * d
    weights = h * q + 2 * h * kv + q * h
    biases = (q + 2 * kv) if model.qkv_bias else 0
    return weights + biases


def moe_layer_count(model: ModelSpec) -> int:
    """MoE layers of the model, the set the runtime builds (`parallel_dims.moe_layer_ids`)."""
    return len(dims.moe_layer_ids(model))


def count_parameters(model: ModelSpec) -> ParameterCount:
    """Exact parameter count of the decoder-only model the runtime builds."""
    h, vocab = model.hidden_size, model.vocab_size
    token_embedding = vocab * h
    output_head = 0 if model.tie_embeddings else vocab * h
    positions = model.max_seq_len * h if model.position == "learned" else 0
    attention = attention_params(model)
    norms = 2 * _norm_params(model)
    final_norm = _norm_params(model)
    moe_layers = moe_layer_count(model)
    dense_layers = model.num_layers - moe_layers
    dense_ffn = _ffn_params(model, model.ffn_hidden_size)
    expert_ffn = routed = shared = top_k = router = 0
    if model.moe is not None:
        moe = model.moe
        expert_ffn = _ffn_params(model, moe.expert_ffn_hidden_size or model.ffn_hidden_size)
        routed, shared, top_k = moe.num_experts, moe.num_shared_experts, moe.top_k
        router = h * moe.num_experts
    per_layer_common = attention + norms
    moe_total = router + (routed + shared) * expert_ffn
    moe_active = router + (min(top_k, routed) + shared) * expert_ffn
    embedding = token_embedding + output_head + positions
    body = model.num_layers * per_layer_common + dense_layers * dense_ffn + final_norm
    mtp = mtp_active = mtp_experts = mtp_norms = 0
    for depth in range(model.mtp_depth):
        extra, extra_norms = mla.mtp_extra_params(model)
        moe_block = mla.mtp_block_is_moe(model, depth)
        mtp += per_layer_common + extra + (moe_total if moe_block else dense_ffn)
        mtp_active += per_layer_common + extra + (moe_active if moe_block else dense_ffn)
        mtp_experts += routed * expert_ffn if moe_block else 0
        mtp_norms += norms + extra_norms
    total = embedding + body + moe_layers * moe_total + mtp
    active = embedding + body + moe_layers * moe_active + mtp_active
    return ParameterCount(
        total=total, active=active, embedding=embedding, non_embedding=total - embedding,
        token_embedding=token_embedding, output_head=output_head, positions=positions,
        attention_per_layer=attention, norms_per_layer=norms, dense_ffn_per_layer=dense_ffn,
        expert_ffn=expert_ffn, router_per_layer=router, dense_layers=dense_layers,
        moe_layers=moe_layers, final_norm=final_norm, routed_experts=routed,
        shared_experts=shared, top_k=top_k,
        attention_replicated_per_layer=mla.mla_params(model)[1] if model.mla else 0,
        mtp=mtp, mtp_active=mtp_active, mtp_experts=mtp_experts, mtp_norms=mtp_norms,
    )


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token (forward + backward), split so each source's convention can be rebuilt."""

    matmul: float
    """6 x active matmul parameters touched per token, output head included, embedding lookup excluded
    (Kaplan et al. 2020 eq. 2.2 / PaLM App. B: 2 FLOPs per weight forward, 4 backward)."""
    attention: float
    """Core attention (QK^T and AV), 3 x forward."""
    embedding: float
    """6 x token embedding (+ positions): only the conventions that count it (torchtitan Apr-2024, llm-foundry)."""
    head: float = 0.0
    """The output head's share of `matmul` (6·V·h): outside the blocks, never recomputed."""
    alternate_recompute: float = 0.0
    """Forward matmul FLOPs that torchtitan's alternate-matmul selective policy recomputes: wk, wo and
    w3 (SwiGLU) or w2 (ungated), 2 FLOPs per weight per token, every layer (MoE: active experts)."""
    attention_executed: float | None = None
    """Core attention FLOPs the runtime's kernel computes, where they differ from `attention`: a
    sliding window runs in query blocks that compute every key of their span, masked ones included
    (`specc.spec.attention_window`). None: the kernel computes `attention`."""

    @property
    def model(self) -> float:
        """Model FLOPs per token (no recompute): matmuls + attention."""
        return self.matmul + self.attention

    @property
    def kernel_attention(self) -> float:
        """Core attention FLOPs as executed (see `attention_executed`)."""
        return self.attention if self.attention_executed is None else self.attention_executed

    @property
    def executed(self) -> float:
        """FLOPs per token the kernels compute without recompute: model FLOPs, with the attention as
        executed. Step time is built on these; MFU stays on `model`."""
        return self.matmul + self.kernel_attention


def attention_context(model: ModelSpec, seq_len: int, causal: bool) -> float:
    """Mean keys each query attends to: s (non-causal), ~s/2 (causal), capped by a sliding window."""
    if model.sliding_window and model.sliding_window < seq_len:
        w = model.sliding_window
        # Causal window: the first w tokens see 1..w keys, the rest see w keys.
        return w if not causal else (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len
    return seq_len if not causal else (seq_len + 1) / 2


def flops_per_token(model: ModelSpec, seq_len: int, causal: bool = True,
                    counts: ParameterCount | None = None) -> FlopsPerToken:
    """Training FLOPs per token.

    Matmuls: 6 FLOPs per active weight (Kaplan et al. 2020, eq. 2.2). Attention: forward
    QK^T and AV cost 2·2·ctx·heads·head_dim per token per layer; training is 3x forward,
    i.e. 12·L·H·Q·ctx (PaLM App. B; torchtitan `get_num_flop_per_token` with ctx = T).
    `causal=False` is the Megatron / llm-foundry / older MaxText convention (ctx = s);
    `causal=True` halves it (Megatron-LM >= 2025, docs/formulas.md section 2).
    """
    counts = counts or count_parameters(model)
    linear = counts.active - counts.token_embedding - counts.positions
    # Norm weights and biases are elementwise, not matmuls; the router is a matmul.
    linear -= model.num_layers * counts.norms_per_layer + counts.final_norm + counts.mtp_norms
    linear -= (model.num_layers + model.mtp_depth) * mla.latent_norm_params(model)
    if model.qkv_bias:
        linear -= model.num_layers * (model.num_heads + 2 * model.kv_heads) * model.head_size
    if model.tie_embeddings:
        linear += counts.token_embedding  # the tied head is still a matmul
    # each MTP module runs the shared output head once more (DeepSeek-V3 eq. 23)
    linear += model.mtp_depth * model.vocab_size * model.hidden_size
    per_key = mla.attention_flops_per_key(model, model.num_layers + model.mtp_depth)
    attention = per_key * attention_context(model, seq_len, causal)
    executed = None
    if model.sliding_window and model.sliding_window < seq_len:
        executed = per_key * executed_keys_per_query(seq_len, model.sliding_window)
    embedding = 6.0 * (counts.token_embedding + counts.positions)
    head = 6.0 * model.vocab_size * model.hidden_size * (1 + model.mtp_depth)
    return FlopsPerToken(matmul=6.0 * linear, attention=attention, embedding=embedding, head=head,
                         alternate_recompute=_alternate_recompute_flops(model), attention_executed=executed)


def _alternate_recompute_flops(model: ModelSpec) -> float:
    """See `FlopsPerToken.alternate_recompute`."""
    h, d = model.hidden_size, model.head_size
    width, active = model.ffn_hidden_size, 1
    if model.moe is not None:
        width = model.moe.expert_ffn_hidden_size or width
        active = model.moe.top_k + model.moe.num_shared_experts
    per_layer = h * model.kv_heads * d + model.num_heads * d * h + h * width * active
    return 2.0 * model.num_layers * per_layer


def hardware_flops_per_token(flops: FlopsPerToken, recompute: str, selective_policy: str = "matmuls",
                             eager_attention: bool = True, chunked_loss: bool = False,
                             recomputed_share: float = 1.0) -> float:
    """FLOPs the device really executes: model FLOPs, with the attention its kernel computes
    (`FlopsPerToken.executed`: a sliding window's blocks), + recomputation, plus, with the chunked
    loss (`parallel.loss: chunked`, specc/runtime/train/loss.py), the head's forward again in its
    backward (2·V·h per token, a third of `head`).

    full: one extra forward of every block = +1/3 of the blocks' matmuls and attention (HFU ~ 4/3
    MFU; SC21's 96·B·s·L·h²(1 + s/6h + V/16Lh) = 4/3 of 72·B·s·L·h²(1 + s/6h) + the head's 6·V·h,
    docs/formulas.md section 2); selective: only the attention core's forward is recomputed (Korthikanti
    et al. 2022, section 5: 1T model MFU 56.3% vs HFU 57.0%) with eager attention, nothing but
    pointwise ops with flash/sdpa (specc's policy keeps their output), or with `alternate_matmuls`
    half the block's matmuls (see `FlopsPerToken.alternate_recompute`). Block recompute never covers
    the output head; only the chunked loss recomputes its forward. `recomputed_share`: the share of
    blocks `recompute: full` recomputes (`recompute_every: n` -> `recomputed_share`), which scales its
    extra forward (blocks are alike, so each costs 1/L of it).
    """
    return (_block_flops(flops, recompute, selective_policy, eager_attention, recomputed_share)
            + (flops.head / 3.0 if chunked_loss else 0.0))


def recomputed_share(num_layers: int, recompute: str, recompute_every: int) -> float:
    """Share of the blocks that `recompute: full` with `recompute_every` recomputes, model-wide
    (`parallel_dims.is_recomputed_layer`: floor(L / n) of L blocks); 0 without full recompute."""
    if recompute != "full":
        return 0.0
    return (num_layers // recompute_every) / num_layers  # ids n-1, 2n-1, ... below L


def _block_flops(flops: FlopsPerToken, recompute: str, selective_policy: str, eager_attention: bool,
                 share: float = 1.0) -> float:
    """Model FLOPs plus the blocks' recomputation (`hardware_flops_per_token`)."""
    if recompute == "full":
        return flops.executed + share * (flops.matmul - flops.head + flops.kernel_attention) / 3.0
    if recompute == "selective" and selective_policy == "alternate_matmuls":
        # torchtitan's policy keeps the attention output but recomputes wk, wo and w3 (or w2).
        return flops.executed + flops.alternate_recompute
    if recompute == "selective" and eager_attention:
        return flops.executed + flops.kernel_attention / 3.0
    if recompute == "selective":  # flash/sdpa output kept: only pointwise ops are recomputed
        return flops.executed
    return flops.executed
