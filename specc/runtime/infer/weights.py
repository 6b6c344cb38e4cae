"""Loading and saving whole models and the tokenizer, in the pretrain stage's export format.

A model directory holds `model.safetensors` (FQN-keyed, `output.weight` left out when tied
to the embeddings) and `config.json` (the ModelSpec), exactly what
`specc.runtime.train.stage.export_final` writes, so every later stage reads pretrained,
aligned and distilled models the same way. The sha256 of the weights file is recorded by
the stages that start from it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from specc.integrity import StageError, file_digest, read_json, storage_cause, storage_error
from specc.runtime.io import atomic_write_json, check_upstream
from specc.runtime.train.model import Transformer, build_model
from specc.spec.model import ModelSpec

if TYPE_CHECKING:  # the TPU environment, which imports this module for its weights, has no tokenizers
    from tokenizers import Tokenizer

WEIGHTS = "model.safetensors"


def model_spec_from_dir(directory: Path) -> ModelSpec:
    return model_spec_from_file(directory / "config.json")


def model_spec_from_file(path: Path) -> ModelSpec:
    """A ModelSpec config.json, checked: a damaged or hand-edited one is a StageError naming the
    file and the first wrong key, not a pydantic traceback."""
    from pydantic import ValidationError

    data = read_json(path, "model config")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise StageError(f"model config {path}: {key}: {first['msg']} ({error.error_count()} problem(s)); "
                         "it is not the config.json specc wrote for this model") from None


def load_model(directory: Path, device: str | torch.device = "cpu") -> Transformer:
    """The model saved in `directory`, in eval mode.

    When `directory` is a stage's `final/` (the stage's `_SUCCESS.json` records its files),
    the files are first checked against that record; an unreadable weights file is a
    StageError naming it either way. A Hugging Face directory (config.json with a `model_type`,
    as `specc export` and the deploy stage write, or a downloaded snapshot) is read by
    `specc.runtime.hf.load`."""
    from specc.spec.hf_config import is_hf_directory

    if is_hf_directory(directory):
        from specc.runtime.hf.load import load_hf_model

        return load_hf_model(directory, device)
    check_upstream(directory.parent, directory.parent.name)
    spec = model_spec_from_dir(directory)
    model = build_model(spec, seed=0)
    try:
        state = load_file(str(directory / WEIGHTS))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own (Rust) error types
        raise StageError(f"{directory / WEIGHTS} is not readable safetensors ({error})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not (name == "output.weight" and spec.tie_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS} does not match its config.json: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.to(device).eval()


def save_model(model: Transformer, directory: Path, extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write `model.safetensors` + `config.json` atomically (the weights file is renamed into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    if model.spec.tie_embeddings:
        state.pop("output.weight", None)
    state.update(extra_tensors or {})
    write_safetensors(dict(sorted(state.items())), directory / WEIGHTS, {"format": "pt"})
    atomic_write_json(directory / "config.json", model.spec.model_dump(mode="json"))


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> dict:
    """Write a safetensors file atomically (temporary + rename) and return its size and sha256.

    A full disk or I/O error is a StorageError naming `path` and the free space (safetensors'
    own error only prints the OS error inside a Rust debug string); the temporary is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    except Exception as error:
        temporary.unlink(missing_ok=True)
        cause = storage_cause(error)
        if cause is None:
            raise
        raise storage_error(path, cause, "weights") from error
    return file_digest(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TextCodec:
    """The byte-level BPE tokenizer plus the ids the stages need."""

    tokenizer: Tokenizer
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def load_codec(path: Path, eos_token: str = "<|endoftext|>", pad_token: str = "<|pad|>") -> TextCodec:
    """Tokenizer from `tokenizer.json`; the pad id falls back to EOS when there is no pad token.

    A missing, truncated or hand-damaged file is a StageError naming it (the tokenizers
    library's own message is a bare JSON parse error without the path)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the Rust side raises a plain Exception
        raise StageError(f"{path} is not a readable tokenizer ({error}); re-run the tokenize stage "
                         "(relaunch: a damaged output makes it run again) or fix tokenizer.path") from None
    eos_id = tokenizer.token_to_id(eos_token)
    if eos_id is None:
        raise StageError(f"{path}: no end-of-document token {eos_token!r}")
    pad_id = tokenizer.token_to_id(pad_token)
    return TextCodec(tokenizer, eos_id, eos_id if pad_id is None else pad_id)
