"""Torch-free reading of a local Hugging Face model directory (config.json, weights index,
tokenizer files) into specc's `ModelSpec` fields, and back.

Why its own module: `specc validate` and `specc plan` must read the architecture of an
`init_from` directory without importing torch, and the export (`specc.runtime.hf.export`)
must write the config.json that this reader maps back to the same ModelSpec, so the two
directions live side by side and a round trip is checked by the tests.

Supported `model_type`s: `llama`, `mistral` (with or without a sliding window), `qwen2`
(q/k/v biases, full attention on every layer) and `mixtral` (top-k softmax routing over
SwiGLU experts). All four are pre-norm RMSNorm + RoPE (rotate-half, GPT-NeoX layout, the
same as `specc.runtime.train.model.apply_rope`) + SwiGLU, the architecture specc builds.
Anything a config asks for that specc's model does not compute (RoPE scaling, Llama's
o_proj/MLP biases, Qwen2's per-layer sliding windows, ...) is a reason the directory is
refused, never silently dropped.
"""

from __future__ import annotations

import json
import struct
import re
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "mixtral")
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""`owner/name` as the Hugging Face Hub spells a repository id."""

TRAINING_CHOICES = frozenset({"attention", "dropout", "init", "init_from"})
"""ModelSpec keys a spec may set freely next to `init_from`: how the model is computed or
trained, not what it is. (`moe.capacity_factor` and `moe.aux_loss_weight` likewise.)"""
MOE_TRAINING_CHOICES = frozenset({"capacity_factor", "aux_loss_weight"})


class HFConfigError(ValueError):
    """A directory that is not a Hugging Face model specc can load, with the reason."""


@dataclass
class HFModel:
    """What a local Hugging Face directory holds, as specc reads it."""

    directory: Path
    model_type: str
    config: dict
    fields: dict
    """ModelSpec fields (JSON-able), including `moe` for Mixtral."""
    hf_names: dict = field(default_factory=dict)
    """ModelSpec key -> the config.json key it came from (for messages)."""


def looks_like_hub_id(value: str) -> bool:
    """`mistralai/Mistral-7B-v0.1`: owner/name, not a path that exists or starts like one."""
    return bool(HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def is_hf_directory(directory: Path) -> bool:
    """A directory whose config.json names a Hugging Face `model_type` (specc's own model
    directories hold a ModelSpec dump, which has no `model_type`)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise HFConfigError(f"{directory} has no config.json (a Hugging Face model directory has one)") from None
    except (OSError, ValueError) as error:
        raise HFConfigError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise HFConfigError(f"{path} is not a JSON object")
    return config


def rope_theta(config: dict) -> float:
    """transformers 4.x writes `rope_theta`; 5.x writes `rope_parameters.rope_theta`."""
    parameters = config.get("rope_parameters") or {}
    return float(parameters.get("rope_theta", config.get("rope_theta", 10000.0)))


def unsupported(config: dict) -> list[str]:
    """Why specc's model cannot compute this config's architecture (empty when it can)."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        return [f"model_type {model_type!r} (supported: {', '.join(SUPPORTED_TYPES)})"]
    reasons = []
    scaling = config.get("rope_scaling") or {}
    rope_type = (config.get("rope_parameters") or {}).get("rope_type") or scaling.get("rope_type") or scaling.get("type")
    if rope_type not in (None, "default"):
        reasons.append(f"RoPE scaling {rope_type!r} (specc computes unscaled RoPE)")
    if config.get("hidden_act", "silu") != "silu":
        reasons.append(f"hidden_act {config.get('hidden_act')!r} (specc's gated FFN is SwiGLU: silu)")
    if model_type == "llama" and config.get("attention_bias"):
        reasons.append("attention_bias (Llama's o_proj bias; specc has q/k/v biases only)")
    if config.get("mlp_bias"):
        reasons.append("mlp_bias")
    if model_type == "qwen2" and config.get("use_sliding_window"):
        reasons.append("use_sliding_window (Qwen2's per-layer windows; specc windows every layer or none)")
    types = set(config.get("layer_types") or [])
    if model_type != "qwen2" and "full_attention" in types and "sliding_attention" in types:
        reasons.append("a mix of full and sliding-window layers")
    if model_type == "mixtral" and config.get("num_experts_per_tok", 2) < 2:
        reasons.append("num_experts_per_tok 1 (specc renormalises top-k weights only for k > 1)")
    if model_type == "mixtral" and config.get("router_jitter_noise", 0.0):
        reasons.append(f"router_jitter_noise {config['router_jitter_noise']} (specc's router adds no noise)")
    if config.get("attention_dropout", 0.0):
        reasons.append(f"attention_dropout {config['attention_dropout']}")
    return reasons


def model_fields(config: dict) -> dict:
    """The ModelSpec fields a supported config.json describes (call `unsupported` first)."""
    heads = config["num_attention_heads"]
    fields = {
        "num_layers": config["num_hidden_layers"], "hidden_size": config["hidden_size"],
        "num_heads": heads, "num_kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "ffn_hidden_size": config["intermediate_size"], "activation": "swiglu", "norm": "rmsnorm",
        "norm_eps": config.get("rms_norm_eps", 1e-6), "position": "rope", "rope_theta": rope_theta(config),
        "vocab_size": config["vocab_size"], "max_seq_len": config["max_position_embeddings"],
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        "sliding_window": None, "qkv_bias": config["model_type"] == "qwen2",
    }
    if config["model_type"] in ("mistral", "mixtral"):
        fields["sliding_window"] = config.get("sliding_window")
    if config["model_type"] == "mixtral":
        experts, top_k = config["num_local_experts"], config.get("num_experts_per_tok", 2)
        # HF's load_balancing_loss_func sums f x P over the k choices separately, specc's Switch loss
        # averages the assignment shares over them (`specc.runtime.train.moe`): k x the weight is the same loss
        fields["moe"] = {"num_experts": experts, "top_k": top_k,
                         # Mixtral drops no token: capacity = every token of the micro-batch
                         "capacity_factor": experts / top_k,
                         "aux_loss_weight": config.get("router_aux_loss_coef", 0.001) * top_k}
    return fields


HF_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
            "num_kv_heads": "num_key_value_heads", "ffn_hidden_size": "intermediate_size",
            "norm_eps": "rms_norm_eps", "max_seq_len": "max_position_embeddings",
            "tie_embeddings": "tie_word_embeddings", "activation": "hidden_act", "norm": "model_type",
            "position": "model_type", "qkv_bias": "model_type", "rope_theta": "rope_theta",
            "moe.num_experts": "num_local_experts", "moe.top_k": "num_experts_per_tok"}


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a directory: the index's shards, or the single file."""
    index = directory / WEIGHTS_INDEX
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise HFConfigError(f"{index} is not a safetensors index ({error})") from None
        if not files:
            raise HFConfigError(f"{index} maps no tensor to a file (empty weight_map)")
        odd = [name for name in files if not isinstance(name, str) or Path(name).name != name or name in (".", "..")]
        if odd:  # transformers writes shard names beside the index; a path would load another model's weights
            raise HFConfigError(f"{index} names {odd[0]!r}, not a shard file beside the index")
        return [directory / name for name in files]
    single = directory / WEIGHTS_FILE
    if single.exists():
        return [single]
    others = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.safetensors"))
    found = f" (found {', '.join(others[:3])})" if others else ""
    raise HFConfigError(f"{directory} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}{found}")


INTEGER_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "head_dim", "num_local_experts", "num_experts_per_tok")
"""config.json keys the model's shapes come from; transformers takes them as ints."""
NULLABLE_KEYS = ("num_key_value_heads", "head_dim")
"""Of INTEGER_KEYS, those transformers writes as null to mean its default (all heads for K/V,
hidden_size // num_attention_heads), e.g. Mixtral's `head_dim: null`."""
SAFETENSORS_MAX_HEADER = 100_000_000
"""The safetensors format's own limit on the JSON header (safetensors' MAX_HEADER_SIZE)."""


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded (an interrupted download, another format), or None:
    an 8-byte little-endian header length, that many bytes of JSON, and every tensor's
    `data_offsets` inside the bytes that follow (the safetensors format, huggingface/safetensors
    README "Format"). Reads the header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{path} is {size} bytes, shorter than a safetensors header"
            length = struct.unpack("<Q", prefix)[0]
            if length > SAFETENSORS_MAX_HEADER or 8 + length > size:
                return f"{path}: its header claims {length} bytes but the file has {size}: truncated, or not safetensors"
            header = json.loads(handle.read(length))
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})"
    except (ValueError, UnicodeDecodeError) as error:
        return f"{path}: the safetensors header is not JSON ({error})"
    if not isinstance(header, dict):
        return f"{path}: the safetensors header is not a JSON object"
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"{path}: tensor {name!r} has no valid data_offsets"
        if offsets[1] > data:
            return f"{path}: tensor {name!r} ends at byte {offsets[1]} of the data, which has {data}: the file is truncated"
    return None


def read_hf_model(directory: Path) -> HFModel:
    """Read and check a local Hugging Face directory; HFConfigError says what is missing or unsupported."""
    config = read_config(directory)
    path = directory / "config.json"
    try:
        reasons = unsupported(config)
        if reasons:
            raise HFConfigError(f"{path}: specc cannot load " + "; ".join(reasons))
        wrong = [f"{key}: {config[key]!r}" for key in INTEGER_KEYS
                 if key in config and not (config[key] is None and key in NULLABLE_KEYS)
                 and (not isinstance(config[key], int) or isinstance(config[key], bool))]
        if wrong:
            raise HFConfigError(f"{path}: not whole numbers: {', '.join(wrong)}")
        fields = model_fields(config)
    except KeyError as error:
        raise HFConfigError(f"{path} has no {error.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, ZeroDivisionError) as error:
        if isinstance(error, HFConfigError):
            raise
        raise HFConfigError(f"{path} has a value of the wrong type ({error})") from None
    return HFModel(directory, config["model_type"], config, fields)


def tokenizer_json_problem(path: Path) -> str | None:
    """Why `path` is not a `tokenizers` tokenizer.json (what `Tokenizer.from_file` reads: a JSON
    object with a `model`), or None; the stages would fail loading it after the data stage ran."""
    try:
        content = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        return f"is not readable JSON ({error})"
    if not isinstance(content, dict) or not isinstance(content.get("model"), dict):
        return "is not a `tokenizers` tokenizer.json (no `model` object)"
    return None


def tokenizer_files(directory: Path) -> tuple[Path, dict]:
    """tokenizer.json and the parsed tokenizer_config.json ({} when absent) of a directory."""
    tokenizer = directory / "tokenizer.json"
    if not tokenizer.exists():
        raise HFConfigError(f"{directory} has no tokenizer.json (specc reads fast tokenizers only)")
    problem = tokenizer_json_problem(tokenizer)
    if problem:
        raise HFConfigError(f"{tokenizer} {problem}")
    config_path = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
    except (OSError, ValueError) as error:
        raise HFConfigError(f"{config_path} is not readable JSON ({error})") from None
    return tokenizer, config


def token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def chat_template(tokenizer_config: dict) -> str | None:
    """The `chat_template` of tokenizer_config.json (a string, or the `default` of a named list)."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def architecture_for(model: dict) -> str:
    """The HF model_type an export of this ModelSpec (as a dict) writes: Mixtral for MoE, Qwen2
    for q/k/v biases, Mistral for a sliding window, else Llama (the same computation)."""
    if model.get("moe"):
        return "mixtral"
    if model.get("qkv_bias"):
        return "qwen2"
    if model.get("sliding_window") is not None:
        return "mistral"
    return "llama"


ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "mixtral": "MixtralForCausalLM"}


def hf_config(model: dict, bos_id: int | None, eos_id: int | None, pad_id: int | None = None) -> dict:
    """config.json for the architecture `architecture_for` picks; `model_fields` reads it back
    to the same ModelSpec fields (keys read by transformers 4.x and 5.x)."""
    model_type = architecture_for(model)
    config = {
        "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
        "vocab_size": model["vocab_size"], "hidden_size": model["hidden_size"],
        "intermediate_size": (model.get("moe") or {}).get("expert_ffn_hidden_size") or model["ffn_hidden_size"],
        "num_hidden_layers": model["num_layers"], "num_attention_heads": model["num_heads"],
        "num_key_value_heads": model.get("num_kv_heads") or model["num_heads"],
        "head_dim": model.get("head_dim") or model["hidden_size"] // model["num_heads"],
        "hidden_act": "silu", "max_position_embeddings": model["max_seq_len"],
        "rms_norm_eps": model["norm_eps"], "rope_theta": model["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": model["rope_theta"]},
        "attention_dropout": 0.0, "tie_word_embeddings": model["tie_embeddings"],
        "initializer_range": (model.get("init") or {}).get("std", 0.02),
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
        "torch_dtype": "float32", "dtype": "float32", "use_cache": True,
    }
    if model_type == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    if model_type in ("mistral", "mixtral"):
        config["sliding_window"] = model.get("sliding_window")
    if model_type == "qwen2":
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=model["num_layers"],
                      layer_types=["full_attention"] * model["num_layers"])
    if model_type == "mixtral":
        moe = model["moe"]
        config.update(num_local_experts=moe["num_experts"], num_experts_per_tok=moe["top_k"],
                      router_aux_loss_coef=moe.get("aux_loss_weight", 0.01) / moe["top_k"], router_jitter_noise=0.0,
                      output_router_logits=False)
    return config
