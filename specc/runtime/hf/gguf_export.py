"""Export specc's Transformer as one GGUF file for llama.cpp (and the engines built on it),
written with the `gguf` package, following llama.cpp's `convert_hf_to_gguf.py`:

- architecture `llama` for Llama, Mistral and Mixtral configs (llama.cpp serves all three with it;
  Mixtral's experts as stacked `ffn_{gate,up,down}_exps`), `qwen2` for Qwen2 (q/k/v biases);
- tensor names `token_embd`, `blk.N.attn_{norm,q,k,v,output}`, `blk.N.ffn_{norm,gate,up,down}`,
  `blk.N.ffn_gate_inp` (router), `output_norm`, `output` (left out when tied to the embeddings);
- q/k rows of the `llama` architecture permuted from HF's rotate-half RoPE layout to GGML's
  interleaved pairs (`LlamaModel.permute`); `qwen2` uses NeoX RoPE and keeps HF's layout;
- tensor types `f32`, `f16` (1-D tensors stay f32) or `q8_0` (32-value blocks with one f16 scale;
  matrices whose rows are not whole blocks stay f16), llama.cpp's `--outtype`;
- metadata: context length, embedding/FFN widths, block count, head counts, RMSNorm epsilon, RoPE
  base and dimensions, expert counts, and the tokenizer (`gpt2` byte-level BPE with GPT-2's split:
  tokens, token types, merges, BOS/EOS/padding/end-of-turn ids) with the chat template the
  alignment stages trained with.

A sliding-window model whose window is shorter than its context is refused: llama.cpp's `llama`
architecture attends over the whole context, so the served model would not be the trained one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from specc.runtime.hf.names import hf_source
from specc.spec.capabilities import hf_export_incompatibilities
from specc.spec.hf_config import architecture_for
from specc.spec.model import ModelSpec

GGUF_TYPES = ("f32", "f16", "q8_0")
"""Tensor types `export_gguf` writes (llama.cpp's `convert_hf_to_gguf.py --outtype`)."""

LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "block_sparse_moe.gate": "ffn_gate_inp",
}
"""HF module of a block -> GGUF tensor base name (llama.cpp `gguf-py/gguf/tensor_mapping.py`)."""
EXPERT_TENSORS = {"w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}


class GGUFExportError(ValueError):
    """A model or tokenizer GGUF cannot express."""


def gguf_architecture(spec: ModelSpec) -> str:
    """`llama` or `qwen2`, the llama.cpp architecture of an HF-exportable model."""
    reasons = hf_export_incompatibilities(spec)
    if reasons:
        raise GGUFExportError("GGUF exports Llama, Mistral, Qwen2 and Mixtral models; this model has " + ", ".join(reasons))
    if spec.sliding_window is not None and spec.sliding_window < spec.max_seq_len:
        raise GGUFExportError(f"a sliding window of {spec.sliding_window} tokens within a {spec.max_seq_len}-token context: "
                              "llama.cpp's llama architecture attends over the whole context; export format hf instead")
    return "qwen2" if architecture_for(spec.model_dump(mode="json")) == "qwen2" else "llama"


def rope_interleave(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of q or k (heads x head_dim) from rotate-half order (first half of each head's
    dimensions pairs with the second half) to GGML's adjacent pairs (llama.cpp `LlamaModel.permute`)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def gguf_tensors(model: nn.Module, spec: ModelSpec, architecture: str) -> dict[str, torch.Tensor]:
    """GGUF name -> fp32 tensor (torch's row-major shape; the writer reverses it into GGML order)."""
    tensors = {}
    experts = spec.moe.num_experts if spec.moe else 0
    for name, tensor in model.state_dict().items():
        if name == "output.weight" and spec.tie_embeddings:
            continue
        tensor = tensor.detach().float().cpu()
        source = hf_source(name, experts)
        if source.stacked:  # specc (experts, in, out) -> GGUF (experts, out, in)
            layer, matrix = name.split(".")[1], name.rsplit(".", 1)[1]
            tensors[f"blk.{layer}.{EXPERT_TENSORS[matrix]}.weight"] = tensor.transpose(1, 2).contiguous()
            continue
        hf_name = source.names[0]
        if hf_name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = tensor
        elif hf_name == "model.norm.weight":
            tensors["output_norm.weight"] = tensor
        elif hf_name == "lm_head.weight":
            tensors["output.weight"] = tensor
        else:
            _, _, layer, rest = hf_name.split(".", 3)
            module, leaf = rest.rsplit(".", 1)
            base = LAYER_TENSORS[module]
            if architecture == "llama" and base in ("attn_q", "attn_k") and leaf == "weight":
                tensor = rope_interleave(tensor, spec.num_heads if base == "attn_q" else spec.kv_heads)
            tensors[f"blk.{layer}.{base}.{leaf}"] = tensor.contiguous()
    return tensors


def tokenizer_metadata(tokenizer_json: Path, vocab_size: int) -> dict:
    """tokens (id order, padded to the model's vocabulary with unused `[PADi]`), token types and
    merges of a byte-level BPE tokenizer.json (what llama.cpp's `gpt2` tokenizer model reads)."""
    from gguf import TokenType

    tokenizer = json.loads(Path(tokenizer_json).read_text())
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise GGUFExportError(f"{tokenizer_json}: GGUF export reads byte-level BPE tokenizers; this one is "
                              f"{model.get('type')!r}")
    by_id = {index: (token, TokenType.NORMAL) for token, index in model["vocab"].items()}
    by_id.update({added["id"]: (added["content"], TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
                  for added in tokenizer.get("added_tokens", [])})
    if max(by_id) >= vocab_size:
        raise GGUFExportError(f"{tokenizer_json}: token id {max(by_id)} is outside the model's vocabulary of {vocab_size}")
    tokens = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": [t for t, _ in tokens], "types": [int(k) for _, k in tokens], "merges": merges,
            "ids": {token: index for index, (token, _) in enumerate(tokens)},
            "pre": pre_tokenizer_name(tokenizer, tokenizer_json)}


def pre_tokenizer_name(tokenizer: dict, tokenizer_json: Path) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for this tokenizer.json: `gpt-2` for the GPT-2 byte-level
    split (`ByteLevel` with its regex: specc's own tokenizers). llama.cpp names other splits
    (Llama 3's, Qwen2's, ...) by hashing their output in its converter; a tokenizer this export
    cannot name is refused rather than written with a split llama.cpp would apply differently."""
    pre = tokenizer.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    raise GGUFExportError(f"{tokenizer_json}: pre-tokenizer {pre.get('type')!r} is not GPT-2's byte-level split; "
                          "GGUF export names only that one for llama.cpp (tokenizer.ggml.pre); "
                          "convert with llama.cpp's convert_hf_to_gguf.py from the `hf` export instead")


def tensor_data(tensor: torch.Tensor, tensor_type: str):
    """(numpy data, GGML type) of one tensor in `tensor_type` (1-D tensors always f32)."""
    from gguf import GGMLQuantizationType, quants

    data = tensor.numpy().astype(np.float32)
    if tensor_type == "f32" or data.ndim == 1:
        return data, GGMLQuantizationType.F32
    if tensor_type == "q8_0" and data.shape[-1] % 32 == 0:
        return quants.quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), GGMLQuantizationType.F16


FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}
"""`general.file_type` (llama.cpp `LlamaFileType`: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0)."""


def export_gguf(model: nn.Module, path: Path, tokenizer_json: Path, eos_token: str, pad_token: str | None,
                chat_template: str | None = None, bos_token: str | None = None, tensor_type: str = "f16",
                name: str = "specc", end_of_turn: str | None = None) -> Path:
    """Write `path` (one .gguf file) and return it. `end_of_turn` (the chat template's, e.g.
    `<|im_end|>`) becomes llama.cpp's end-of-turn token, where chat generation stops."""
    import gguf

    if tensor_type not in GGUF_TYPES:
        raise GGUFExportError(f"GGUF tensor type {tensor_type!r}; use one of {', '.join(GGUF_TYPES)}")
    spec = model.spec
    architecture = gguf_architecture(spec)
    vocab = tokenizer_metadata(tokenizer_json, spec.vocab_size)
    if eos_token not in vocab["ids"]:
        raise GGUFExportError(f"{tokenizer_json}: no end-of-document token {eos_token!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, architecture)
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[tensor_type])
    writer.add_context_length(spec.max_seq_len)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(spec.num_layers)
    writer.add_feed_forward_length(spec.ffn_hidden_size)
    writer.add_head_count(spec.num_heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_layer_norm_rms_eps(spec.norm_eps)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_rope_dimension_count(spec.head_size)
    writer.add_vocab_size(spec.vocab_size)
    if spec.moe is not None:
        writer.add_expert_count(spec.moe.num_experts)
        writer.add_expert_used_count(spec.moe.top_k)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    writer.add_eos_token_id(vocab["ids"][eos_token])
    if bos_token in vocab["ids"]:
        writer.add_bos_token_id(vocab["ids"][bos_token])
    writer.add_add_bos_token(bos_token in vocab["ids"])
    if pad_token in vocab["ids"]:
        writer.add_pad_token_id(vocab["ids"][pad_token])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if end_of_turn in vocab["ids"]:
        writer.add_eot_token_id(vocab["ids"][end_of_turn])
    for tensor_name, tensor in gguf_tensors(model, spec, architecture).items():
        data, kind = tensor_data(tensor, tensor_type)
        writer.add_tensor(tensor_name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path
