"""Export specc's Transformer as a Hugging Face directory that `transformers` (and serving engines
that read HF safetensors) load: Llama, Mistral, Qwen2 or Mixtral, as
`specc.spec.hf_config.architecture_for` picks from the ModelSpec.

Folder: `config.json`, weights as `model.safetensors` or, above `max_shard_bytes`, as
`model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json` (HF's layout: weight map
and `metadata.total_size`), `generation_config.json`, and the tokenizer (`tokenizer.json`,
`tokenizer_config.json` with the chat template the alignment stages trained with,
`special_tokens_map.json`). specc reloads such a folder itself (`specc.runtime.hf.load`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from specc.runtime.hf.names import hf_source
from specc.runtime.infer.weights import write_safetensors
from specc.runtime.integrity import read_json, staged_directory
from specc.runtime.io import atomic_write_json
from specc.spec.capabilities import HF_QUANTIZED_MOE, hf_export_incompatibilities
from specc.spec.hf_config import WEIGHTS_FILE, WEIGHTS_INDEX, hf_config
from specc.spec.model import ModelSpec

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
"""Above this many bytes per file the weights are sharded (the size `transformers` has long used)."""


def hf_state_dict(model: nn.Module, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """specc parameters -> HF tensors (CPU, contiguous); Mixtral experts unstacked and transposed."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "output.weight" and spec.tie_embeddings:
            continue
        tensor = tensor.detach().to("cpu")
        source = hf_source(name, spec.moe.num_experts if spec.moe else 0)
        if source.stacked:
            for hf_name, expert in zip(source.names, tensor.unbind(0)):
                state[hf_name] = expert.t().contiguous().clone()
        else:
            state[source.names[0]] = tensor.contiguous().clone()
    return state


def shard_groups(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors in name order, cut into files of at most `max_shard_bytes` (a larger tensor alone)."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = state[name]
        size += nbytes
    return groups


def write_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> list[str]:
    """One `model.safetensors`, or shards + `model.safetensors.index.json`; returns the file names."""
    groups = shard_groups(state, max_shard_bytes)
    if len(groups) == 1:
        write_safetensors(groups[0], directory / WEIGHTS_FILE, {"format": "pt"})
        return [WEIGHTS_FILE]
    names, weight_map = [], {}
    for number, group in enumerate(groups, start=1):
        name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(group, directory / name, {"format": "pt"})
        weight_map.update({tensor: name for tensor in group})
        names.append(name)
    total = sum(t.numel() * t.element_size() for t in state.values())
    atomic_write_json(directory / WEIGHTS_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [*names, WEIGHTS_INDEX]


def quantized_hf(state: dict[str, torch.Tensor], quantized: dict, quantization: str,
                 group_size: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The HF state with the `quantized` linears packed, and config.json's `quantization_config`."""
    from specc.runtime.deploy.compressed import compressed_state, compressed_tensors_config

    hf_names = {name: hf_source(name + ".weight").names[0].removesuffix(".weight") for name in quantized}
    return compressed_state(state, hf_names, quantized), compressed_tensors_config(quantization, group_size)


def write_tokenizer(tokenizer_json: Path, directory: Path, eos_token: str, pad_token: str | None,
                    chat_template: str | None, bos_token: str | None = None) -> None:
    """tokenizer.json as trained or loaded, and the config files a PreTrainedTokenizerFast reads."""
    shutil.copyfile(tokenizer_json, directory / "tokenizer.json")
    special = {"eos_token": eos_token, **({"pad_token": pad_token} if pad_token else {}),
               **({"bos_token": bos_token} if bos_token else {})}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": None,
              "clean_up_tokenization_spaces": False, **special}
    if chat_template is not None:
        config["chat_template"] = chat_template
    atomic_write_json(directory / "tokenizer_config.json", config)
    atomic_write_json(directory / "special_tokens_map.json", special)


def export_hf(model: nn.Module, directory: Path, tokenizer_json: Path, eos_token: str, pad_token: str | None,
              chat_template: str | None = None, end_of_turn: str | None = None, bos_token: str | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, spec: ModelSpec | None = None,
              quantized: dict | None = None, quantization: str = "none", group_size: int = 128) -> list[str]:
    """Write a folder `transformers.AutoModelForCausalLM.from_pretrained` loads; returns its files.

    `chat_template` (Jinja source) goes into tokenizer_config.json; generation stops at EOS and,
    when the template has one, at its end-of-turn token too. With `quantized` (specc module name ->
    `QuantizedWeight`, from `specc.runtime.deploy.compressed` or `.gptq`) those linears are written
    packed in the compressed-tensors format and config.json carries its `quantization_config`."""
    spec = spec or model.spec
    if quantized and spec.moe is not None:
        raise ValueError(f"quantization {quantization!r} with format hf for a mixture-of-experts model: {HF_QUANTIZED_MOE} "
                         "(validate rejects this spec: R172)")
    reasons = hf_export_incompatibilities(spec)
    if reasons:
        raise ValueError("format 'hf' exports Llama, Mistral, Qwen2 and Mixtral models; this model has "
                         + ", ".join(reasons) + ". Use format: safetensors (validate rejects this spec: R172)")
    tokenizer = read_json(tokenizer_json, "tokenizer")
    vocab = (tokenizer.get("model") or {}).get("vocab") or {}
    ids = {**(vocab if isinstance(vocab, dict) else {}),
           **{token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}}
    if eos_token not in ids:
        raise ValueError(f"{tokenizer_json}: no end-of-document token {eos_token!r}")
    eos_id, bos_id = ids[eos_token], ids.get(bos_token) if bos_token else None
    pad_id = ids.get(pad_token) if pad_token else None
    stop = [eos_id] + ([ids[end_of_turn]] if end_of_turn in ids and ids[end_of_turn] != eos_id else [])
    with staged_directory(directory, "export") as staging:
        state, config = hf_state_dict(model, spec), hf_config(spec.model_dump(mode="json"), bos_id, eos_id, pad_id)
        if quantized:
            state, config["quantization_config"] = quantized_hf(state, quantized, quantization, group_size)
        files = write_weights(state, staging, max_shard_bytes)
        atomic_write_json(staging / "config.json", config)
        generation = {"eos_token_id": stop if len(stop) > 1 else eos_id, "bos_token_id": bos_id,
                      "pad_token_id": pad_id if pad_id is not None else eos_id}
        atomic_write_json(staging / "generation_config.json", generation)
        write_tokenizer(tokenizer_json, staging, eos_token, pad_token if pad_id is not None else None,
                        chat_template, bos_token if bos_id is not None else None)
    return [*files, "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"]
