"""`specc export CHECKPOINT_DIR OUT_DIR`: any stage's model as a Hugging Face directory.

CHECKPOINT_DIR is a model directory (`<stage>/final/`: specc's config.json + model.safetensors,
or a Hugging Face directory) or a training checkpoint (`<stage>/checkpoints/step-N/`, DCP), whose
architecture comes from `--model` (a model directory or a ModelSpec config.json; default the
stage's `final/` or the checkpoint's run's `pretrain/final/`). The tokenizer defaults to the
run's `tokenize/tokenizer.json` (or the HF directory's own); `--chat-template` names the template
the alignment stages trained with (`chatml`, `llama3` or a file), written into the tokenizer config.

`--quantization int8|int4|gptq` writes the weights in the compressed-tensors format
(`specc.runtime.deploy.compressed`); GPTQ calibrates on `--calibration`, a text file tokenized with
the export's tokenizer. `--format gguf` writes one GGUF file for llama.cpp instead
(`specc.runtime.hf.gguf_export`, `--gguf-type f32|f16|q8_0`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from specc.spec.hf_config import is_hf_directory, token_text, tokenizer_files, tokenizer_json_problem


class ExportError(ValueError):
    """A user mistake in `specc export` (printed as `specc: error: ...`, exit 1)."""


def run_dir_of(checkpoint: Path) -> Path | None:
    """`<run>/<stage>/final` or `<run>/<stage>/checkpoints/step-N` -> `<run>`."""
    if checkpoint.name == "final":
        return checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent.parent
    return None


def model_spec_for(checkpoint: Path, model: Path | None):
    """The ModelSpec of a DCP training checkpoint: `--model`, else the stage's or pretrain's final/."""
    from specc.runtime.infer.weights import model_spec_from_dir, model_spec_from_file

    candidates = [model] if model else [checkpoint.parent.parent / "final",
                                        *([run_dir_of(checkpoint) / "pretrain" / "final"] if run_dir_of(checkpoint) else [])]
    for candidate in candidates:
        if candidate.is_file():
            return model_spec_from_file(candidate)
        if (candidate / "config.json").exists():
            if is_hf_directory(candidate):
                from specc.runtime.hf.load import hf_model_spec

                return hf_model_spec(candidate)
            return model_spec_from_dir(candidate)
    raise ExportError(f"{checkpoint} is a training checkpoint without the model's architecture; "
                      "pass --model with a model directory or a ModelSpec config.json")


def load_any(checkpoint: Path, model: Path | None):
    """A whole model, in fp32 on the CPU, from a model directory or a DCP training checkpoint."""
    from specc.runtime.infer.weights import load_model

    if (checkpoint / "checkpoint.json").exists():
        import torch.distributed.checkpoint as dcp

        from specc.runtime.train.checkpoint import _quiet_single_process
        from specc.runtime.train.model import build_model

        transformer = build_model(model_spec_for(checkpoint, model), seed=0)
        state = {"model": transformer.state_dict()}
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(checkpoint))
        transformer.load_state_dict(state["model"])
        return transformer.eval()
    if not (checkpoint / "config.json").exists():
        raise ExportError(f"{checkpoint} is neither a model directory (config.json) nor a training checkpoint "
                          "(checkpoint.json)")
    return load_model(checkpoint)


def tokenizer_for(checkpoint: Path, tokenizer: Path | None) -> tuple[Path, dict]:
    """(tokenizer.json, tokenizer_config.json contents) for the export."""
    if tokenizer is not None:
        if not tokenizer.is_file():
            raise ExportError(f"--tokenizer {tokenizer}: no such file")
        problem = tokenizer_json_problem(tokenizer)
        if problem:  # checked before the model loads and anything is written
            raise ExportError(f"--tokenizer {tokenizer} {problem}")
        return tokenizer, {}
    if is_hf_directory(checkpoint):
        return tokenizer_files(checkpoint)
    run = run_dir_of(checkpoint)
    if run is not None and (run / "tokenize" / "tokenizer.json").exists():
        return run / "tokenize" / "tokenizer.json", {}
    raise ExportError(f"no tokenizer found for {checkpoint}; pass --tokenizer PATH/tokenizer.json")


def check_calibration(text_file: Path | None) -> None:
    """GPTQ needs a calibration text file (checked before the model loads)."""
    if text_file is None:
        raise ExportError("--quantization gptq calibrates on held-out text: pass --calibration FILE.txt")
    if not text_file.is_file():
        raise ExportError(f"--calibration {text_file}: no such file")


def calibration_batches(text_file: Path | None, tokenizer_json: Path, seq_len: int) -> list:
    """GPTQ's calibration input: the text file's tokens in windows of `seq_len` (at most
    `CALIBRATION_WINDOWS`), batches of 8."""
    import torch

    from specc.runtime.deploy.gptq import CALIBRATION_WINDOWS
    from specc.runtime.infer.weights import load_codec

    check_calibration(text_file)
    ids = load_codec(tokenizer_json).encode(text_file.read_text(encoding="utf-8"))
    count = min(len(ids) // seq_len, CALIBRATION_WINDOWS)
    if count == 0:
        raise ExportError(f"--calibration {text_file} has {len(ids)} tokens, fewer than one window of {seq_len}")
    return list(torch.tensor(ids[:count * seq_len]).view(count, seq_len).split(8))


def quantize_for_export(transformer, quantization: str, group_size: int, calibration: Path | None,
                        tokenizer_json: Path) -> dict | None:
    """The quantized linears of an `hf` export (None for `none`); the model keeps its fp32 weights
    except under GPTQ, which calibrates layer by layer on the quantized layers before."""
    from specc.runtime.deploy.compressed import quantize_linears_rtn
    from specc.runtime.deploy.gptq import gptq_model

    try:
        if quantization == "gptq":
            batches = calibration_batches(calibration, tokenizer_json, min(2048, transformer.spec.max_seq_len))
            return gptq_model(copy.deepcopy(transformer), batches, 4, group_size)
        return quantize_linears_rtn(transformer, quantization, group_size) if quantization != "none" else None
    except ValueError as error:
        raise ExportError(str(error)) from None


def export_command(checkpoint: Path, out: Path, tokenizer: Path | None, chat_template: str | None,
                   eos_token: str | None, pad_token: str | None, max_shard_mib: int, model: Path | None,
                   fmt: str = "hf", quantization: str = "none", group_size: int = 64, calibration: Path | None = None,
                   gguf_type: str = "f16") -> list[str]:
    """Export and return the files written."""
    from specc.runtime.deploy.stage import chat_template_args
    from specc.runtime.hf.export import export_hf

    if not checkpoint.is_dir():
        raise ExportError(f"no directory {checkpoint}")
    if not (checkpoint / "checkpoint.json").exists() and not (checkpoint / "config.json").exists():
        raise ExportError(f"{checkpoint} is neither a model directory (config.json) nor a training checkpoint "
                          "(checkpoint.json)")
    tokenizer_json, tokenizer_config = tokenizer_for(checkpoint, tokenizer)
    eos = eos_token or token_text(tokenizer_config.get("eos_token")) or "<|endoftext|>"
    pad = pad_token or token_text(tokenizer_config.get("pad_token")) or "<|pad|>"
    try:
        trained = chat_template_args(chat_template) if chat_template else None
    except ValueError as error:
        raise ExportError(str(error)) from None
    template = trained if trained is not None else \
        ({"chat_template": tokenizer_config["chat_template"]} if isinstance(tokenizer_config.get("chat_template"), str)
         else {})
    if fmt == "gguf" and quantization != "none":
        raise ExportError(f"--quantization {quantization} writes Hugging Face weights; for GGUF use --gguf-type q8_0")
    if quantization == "gptq":
        check_calibration(calibration)
    transformer = load_any(checkpoint, model)
    try:
        if fmt == "gguf":
            from specc.runtime.hf.gguf_export import export_gguf

            return [export_gguf(transformer, out, tokenizer_json, eos, pad, template.get("chat_template"),
                                end_of_turn=template.get("end_of_turn"), tensor_type=gguf_type).name]
        quantized = quantize_for_export(transformer, quantization, group_size, calibration, tokenizer_json)
        return export_hf(transformer, out, tokenizer_json, eos, pad, max_shard_bytes=max_shard_mib * 2**20,
                         quantized=quantized, quantization=quantization, group_size=group_size, **template)
    except ValueError as error:
        raise ExportError(str(error)) from None
