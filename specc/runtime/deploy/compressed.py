"""Quantized Hugging Face exports in the compressed-tensors format (`quant_method:
compressed-tensors`, `format: pack-quantized`), the layout llm-compressor writes and vLLM,
SGLang and `transformers` (with the `compressed-tensors` package) load.

Weight-only, symmetric integer quantization of the transformer blocks' linear layers (attention
q/k/v/o and the dense FFN); embeddings, the output head and norms stay in full precision, as
llm-compressor's W8A16/W4A16 presets leave `lm_head` (`ignore`):
- `int8`: one scale per output channel (W8A16, strategy `channel`);
- `int4`: one scale per `group_size` input columns (W4A16, strategy `group`), round to nearest;
- `gptq`: the same W4A16 layout, its integers and scales chosen by GPTQ (`specc.runtime.deploy.gptq`).

Per linear `X`, the folder stores `X.weight_packed` (int32: 32/bits values per word, value + 2^(bits-1)
in bits [i x bits, (i+1) x bits) of word i // (32/bits), the row padded to whole words), `X.weight_scale`
(out, in / group or 1) and `X.weight_shape` ([out, in]); a client dequantizes w = q x scale
(compressed-tensors `PackedQuantizationCompressor`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

HF_QUANTIZATIONS = {"int8": (8, None), "int4": (4, "group"), "gptq": (4, "group")}
"""Deploy quantization -> (bits, strategy); strategy None is per output channel."""


@dataclass(frozen=True)
class QuantizedWeight:
    """Integers q (int8 tensor holding values in [-(2^(bits-1) - 1), 2^(bits-1) - 1]) and scales
    (out, groups): weight[o, i] ~= q[o, i] x scale[o, i // group_size]."""

    q: torch.Tensor
    scale: torch.Tensor
    bits: int
    group_size: int | None

    def dequantize(self) -> torch.Tensor:
        group = self.group_size or self.q.shape[1]
        return (self.q.float().view(self.q.shape[0], -1, group) * self.scale.float()[..., None]).reshape(self.q.shape)


def max_level(bits: int) -> int:
    """Largest integer of a symmetric `bits`-bit grid (7 for int4, 127 for int8): the grid is
    symmetric about zero, so -2^(bits-1) is never used (as GPTQ's and bitsandbytes' absmax scaling)."""
    return 2 ** (bits - 1) - 1


def group_scales(weight: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """absmax / max_level per output row and group of `group_size` input columns (per row when None)."""
    group = group_size or weight.shape[1]
    absmax = weight.float().view(weight.shape[0], -1, group).abs().amax(dim=-1)
    return absmax.clamp(min=1e-12) / max_level(bits)


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int | None) -> QuantizedWeight:
    """Round to nearest on the absmax grid of each group."""
    check_groups(weight, group_size)
    scale = group_scales(weight, bits, group_size)
    group = group_size or weight.shape[1]
    q = torch.round(weight.float().view(weight.shape[0], -1, group) / scale[..., None])
    q = q.clamp(-max_level(bits), max_level(bits)).to(torch.int8).reshape(weight.shape)
    return QuantizedWeight(q, scale, bits, group_size)


def check_groups(weight: torch.Tensor, group_size: int | None) -> None:
    if group_size is not None and weight.shape[1] % group_size:
        raise ValueError(f"a linear layer with {weight.shape[1]} input features cannot be cut into groups of "
                         f"{group_size}; use a group_size that divides every layer's input width")


def pack_int32(q: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) int8 in [-2^(bits-1), 2^(bits-1)) -> (rows, ceil(cols x bits / 32)) int32, value i
    of a row at bit (i x bits) mod 32 of word (i x bits) // 32, offset to unsigned (bits 4 or 8)."""
    if 32 % bits:
        raise ValueError(f"pack_int32 packs 4- or 8-bit values, not {bits}-bit")
    per_word = 32 // bits
    unsigned = (q.to(torch.int64) + 2 ** (bits - 1))
    unsigned = torch.nn.functional.pad(unsigned, (0, -q.shape[1] % per_word)).view(q.shape[0], -1, per_word)
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    words = (unsigned << shifts).sum(dim=-1)  # < 2^32, exact in int64
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def quantizable(name: str, module: nn.Module) -> bool:
    """Block linears the HF export quantizes: attention and the dense FFN (a quantized `hf` export of a
    MoE model is refused: `specc.spec.capabilities.HF_QUANTIZED_MOE`)."""
    return name.startswith("layers.") and isinstance(module, nn.Linear)


def quantize_linears_rtn(model: nn.Module, method: str, group_size: int) -> dict[str, QuantizedWeight]:
    """Round-to-nearest `int8` or `int4` of every quantizable linear, by specc module name."""
    bits, strategy = HF_QUANTIZATIONS[method]
    return {name: quantize_rtn(module.weight.detach(), bits, group_size if strategy == "group" else None)
            for name, module in model.named_modules() if quantizable(name, module)}


@torch.no_grad()
def apply_dequantized(model: nn.Module, quantized: dict[str, QuantizedWeight]) -> nn.Module:
    """Put the dequantized weights into `model` (in place): the model a client computes after loading."""
    modules = dict(model.named_modules())
    for name, weight in quantized.items():
        linear = modules[name]
        linear.weight.copy_(weight.dequantize().to(linear.weight.dtype))
    return model


def compressed_tensors_config(method: str, group_size: int) -> dict:
    """The `quantization_config` of config.json, as llm-compressor writes it for W8A16 / W4A16
    (every Linear but the output head)."""
    bits, strategy = HF_QUANTIZATIONS[method]
    weights = {"num_bits": bits, "type": "int", "symmetric": True, "strategy": strategy or "channel",
               "group_size": group_size if strategy == "group" else None, "dynamic": False, "actorder": None,
               "block_structure": None, "observer": "minmax", "observer_kwargs": {}}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                          "output_activations": None}},
            "ignore": ["lm_head"], "kv_cache_scheme": None, "global_compression_ratio": None}


def compressed_state(state: dict[str, torch.Tensor], hf_names: dict[str, str],
                     quantized: dict[str, QuantizedWeight]) -> dict[str, torch.Tensor]:
    """Replace each quantized linear's `<hf>.weight` in the HF state dict by its packed tensors.
    `hf_names` maps a specc module name to its HF module name."""
    state = dict(state)
    for name, weight in quantized.items():
        prefix = hf_names[name]
        dtype = state.pop(prefix + ".weight").dtype
        state[prefix + ".weight_packed"] = pack_int32(weight.q.cpu(), weight.bits)
        state[prefix + ".weight_scale"] = weight.scale.to("cpu", dtype).contiguous()
        state[prefix + ".weight_shape"] = torch.tensor(list(weight.q.shape), dtype=torch.int64)
    return state
