"""Export to a Hugging Face-compatible folder (the Llama-like subset) or plain safetensors.

specc's dense RoPE/RMSNorm/SwiGLU model is the Llama architecture with other parameter
names: rotary embeddings use the same rotate-half convention and frequencies as HF's
`LlamaRotaryEmbedding`, so q/k weights need no permutation, only renaming. A model outside
the subset (MoE, ALiBi or learned positions, LayerNorm, GELU, sliding window, muP scaling)
is refused for `format: hf` with the reasons; `format: safetensors` exports any model.

Folder: `config.json` (LlamaForCausalLM), `model.safetensors`, `generation_config.json`,
and the tokenizer as `tokenizer.json` + `tokenizer_config.json` + `special_tokens_map.json`
(a PreTrainedTokenizerFast).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from specc.integrity import read_json, staged_directory
from specc.runtime.infer.weights import write_safetensors
from specc.runtime.io import atomic_write_json
from specc.runtime.train.model import Transformer
from specc.spec.capabilities import hf_export_incompatibilities
from specc.spec.model import ModelSpec

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
}


def llama_incompatibilities(model: ModelSpec) -> list[str]:
    """Why this architecture cannot be loaded as LlamaForCausalLM (empty when it can); the one
    list validate also reads (`specc.spec.capabilities.hf_export_incompatibilities`)."""
    return hf_export_incompatibilities(model)


def hf_config(model: ModelSpec, eos_id: int, bos_id: int | None) -> dict:
    """config.json for LlamaForCausalLM (keys read by transformers 4.x and 5.x)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": model.vocab_size, "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_hidden_size, "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads, "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_size, "hidden_act": "silu", "max_position_embeddings": model.max_seq_len,
        "rms_norm_eps": model.norm_eps, "rope_theta": model.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_theta},
        "attention_bias": model.qkv_bias, "mlp_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": model.tie_embeddings, "initializer_range": model.init.std,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": None,
        "torch_dtype": "float32", "dtype": "float32", "use_cache": True,
    }


def hf_state_dict(transformer: Transformer) -> dict[str, torch.Tensor]:
    """specc parameter names -> Llama names. HF's `attention_bias` also adds an o_proj bias,
    which specc does not have: it is exported as zeros (an exact no-op)."""
    spec = transformer.spec
    state = {}
    for name, tensor in transformer.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous().clone()
        if name == "embeddings.tok_embeddings.weight":
            state["model.embed_tokens.weight"] = tensor
        elif name == "norm.weight":
            state["model.norm.weight"] = tensor
        elif name == "output.weight":
            if not spec.tie_embeddings:
                state["lm_head.weight"] = tensor
        else:
            _, layer, rest = name.split(".", 2)
            state[f"model.layers.{layer}.{LAYER_NAMES[rest]}"] = tensor
    if spec.qkv_bias:
        for layer in range(spec.num_layers):
            state[f"model.layers.{layer}.self_attn.o_proj.bias"] = torch.zeros(spec.hidden_size)
    return state


def write_tokenizer(tokenizer_json: Path, directory: Path, eos_token: str, pad_token: str | None) -> None:
    shutil.copyfile(tokenizer_json, directory / "tokenizer.json")
    special = {"eos_token": eos_token, **({"pad_token": pad_token} if pad_token else {})}
    atomic_write_json(directory / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": None, "clean_up_tokenization_spaces": False,
        **special})
    atomic_write_json(directory / "special_tokens_map.json", special)


def _save(state: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    write_safetensors(dict(sorted(state.items())), path, metadata)


def export_hf(transformer: Transformer, directory: Path, tokenizer_json: Path, eos_token: str,
              pad_token: str | None) -> None:
    """Write a folder `transformers.AutoModelForCausalLM.from_pretrained` loads."""
    reasons = llama_incompatibilities(transformer.spec)
    if reasons:
        raise ValueError("format 'hf' exports the Llama-like subset only; this model has "
                         + ", ".join(reasons) + ". Use format: safetensors (validate rejects this spec: R172)")
    tokenizer = read_json(tokenizer_json, "tokenizer")
    ids = {token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}
    with staged_directory(directory, "export") as staging:
        _save(hf_state_dict(transformer), staging / "model.safetensors", {"format": "pt"})
        atomic_write_json(staging / "config.json", hf_config(transformer.spec, ids[eos_token], None))
        atomic_write_json(staging / "generation_config.json", {"eos_token_id": ids[eos_token]})
        write_tokenizer(tokenizer_json, staging, eos_token, pad_token if pad_token in ids else None)


def export_safetensors(state: dict[str, torch.Tensor], model: ModelSpec, directory: Path, tokenizer_json: Path,
                       quantization: dict) -> None:
    """specc's own layout: weights (possibly quantized: packed tensors and scales), the ModelSpec
    and a `quantization.json` saying how to rebuild the quantized modules."""
    with staged_directory(directory, "export") as staging:
        _save(state, staging / "model.safetensors", {"format": "pt", "quantization": quantization["method"]})
        atomic_write_json(staging / "config.json", model.model_dump(mode="json"))
        atomic_write_json(staging / "quantization.json", quantization)
        shutil.copyfile(tokenizer_json, staging / "tokenizer.json")
