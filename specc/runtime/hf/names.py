"""specc parameter names <-> Hugging Face names, for Llama, Mistral, Qwen2 and Mixtral.

specc's RoPE is the rotate-half (GPT-NeoX) layout with HF's frequencies (`rope_tables`), so
q/k projections need no permutation, only renaming; the tests check this with logits. Mixtral
stores each expert as three Linear layers (`experts.{e}.w1/w2/w3`, weight (out, in)); specc
stacks them as (experts, in, out) for batched matmuls (`GroupedExperts`), so an expert tensor
is the transposed stack of the HF tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYER_NAMES = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wq.bias": "self_attn.q_proj.bias",
    "attention.wk.bias": "self_attn.k_proj.bias",
    "attention.wv.bias": "self_attn.v_proj.bias",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.router.weight": "block_sparse_moe.gate.weight",
}
EXPERT_NAMES = {"w1": "w1", "w2": "w2", "w3": "w3"}
"""specc GroupedExperts matrix -> Mixtral expert Linear (w1 gate, w3 up, w2 down in both)."""


@dataclass(frozen=True)
class Source:
    """Where one specc parameter comes from: one HF tensor as is, or (`stacked`) one HF tensor
    per expert, each transposed, stacked along a new leading dimension."""

    names: tuple[str, ...]
    stacked: bool = False


def hf_source(name: str, num_experts: int = 0) -> Source:
    """The HF tensor(s) of specc parameter `name` (a full-model FQN)."""
    if name == "embeddings.tok_embeddings.weight":
        return Source(("model.embed_tokens.weight",))
    if name == "norm.weight":
        return Source(("model.norm.weight",))
    if name == "output.weight":
        return Source(("lm_head.weight",))
    _, layer, rest = name.split(".", 2)
    prefix = f"model.layers.{layer}."
    if rest.startswith("feed_forward.experts."):
        matrix = rest.rsplit(".", 1)[1]
        return Source(tuple(f"{prefix}block_sparse_moe.experts.{e}.{EXPERT_NAMES[matrix]}.weight"
                            for e in range(num_experts)), stacked=True)
    if rest not in LAYER_NAMES:
        raise KeyError(f"specc parameter {name!r} has no Hugging Face counterpart")
    return Source((prefix + LAYER_NAMES[rest],))
