"""Export to a Hugging Face folder (`specc.runtime.hf.export`: Llama, Mistral, Qwen2, Mixtral)
or to specc's own safetensors layout (any model, possibly quantized).

`format: hf` folders hold `config.json`, the weights (sharded with an index above 5 GiB),
`generation_config.json`, and the tokenizer with the chat template the alignment stages
trained with; a model none of those architectures express is refused with the reasons
(`specc.spec.capabilities.hf_export_incompatibilities`, which validate's R172 reads too).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from specc.integrity import staged_directory
from specc.runtime.hf.export import export_hf, hf_state_dict
from specc.runtime.infer.weights import write_safetensors
from specc.runtime.io import atomic_write_json
from specc.spec.model import ModelSpec

__all__ = ["export_hf", "export_safetensors", "hf_state_dict"]


def _save(state: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    write_safetensors(dict(sorted(state.items())), path, metadata)


def export_safetensors(state: dict[str, torch.Tensor], model: ModelSpec, directory: Path, tokenizer_json: Path,
                       quantization: dict) -> None:
    """specc's own layout: weights (possibly quantized: packed tensors and scales), the ModelSpec
    and a `quantization.json` saying how to rebuild the quantized modules."""
    with staged_directory(directory, "export") as staging:
        _save(state, staging / "model.safetensors", {"format": "pt", "quantization": quantization["method"]})
        atomic_write_json(staging / "config.json", model.model_dump(mode="json"))
        atomic_write_json(staging / "quantization.json", quantization)
        shutil.copyfile(tokenizer_json, staging / "tokenizer.json")
