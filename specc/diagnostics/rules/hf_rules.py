"""`model.init_from`: a local Hugging Face directory that supplies the architecture, the weights
and the tokenizer (R220-R225).

These rules run on the loaded YAML before the schema, because they complete it: the model
fields config.json describes (and `tokenizer.path` / `tokenizer.special_tokens`) are filled in
where the spec leaves them out, so a spec need not restate the model; a field the spec does
state must agree with config.json. `init_from` is rewritten to an absolute path for the bundle.
Reading is torch-free (`specc.spec.hf_config`).

An absolute `init_from` that is not on this machine follows the pre-flight convention of
`path_rules`: it may exist only on the cluster, so `specc validate` and `specc plan` leave it to
`specc launch` (which checks it, unless `--no-path-checks`), and read the architecture from the
spec itself, which must then state it (the schema reports each missing field). `tokenizer.path`
defaults to the directory's tokenizer.json, where the stages will read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from specc.diagnostics.diagnostic import Diagnostic, format_path
from specc.diagnostics.rules.base import Finding
from specc.spec.hf_config import (HF_NAMES, MOE_TRAINING_CHOICES, TRAINING_CHOICES, HFConfigError, HFModel,
                                  chat_template, looks_like_hub_id, read_hf_model, safetensors_problem, token_text,
                                  tokenizer_files, weight_files)
from specc.spec.loader import SourceMap

WHERE = ("model", "init_from")


@dataclass
class InitFrom:
    """The raw spec's `model` mapping, its `init_from` resolved against the spec's directory."""

    data: dict
    value: str
    directory: Path
    root: dict
    """The whole raw spec (for `tokenizer`)."""
    spec_dir: Path
    hf: HFModel | None = None


def init_from_is_a_local_directory(source: InitFrom) -> Iterator[Finding]:
    """`model.init_from` names a local directory: specc never downloads at run time, so a Hub id
    is refused with the command that downloads it.

    passes: `init_from: checkpoints/Mistral-7B-v0.1` (a directory with config.json)
    fails:  `init_from: mistralai/Mistral-7B-v0.1` (a Hub id, no such directory)
    """
    if source.directory.is_dir():
        return
    if source.directory.exists():
        yield Finding(WHERE, f"`{source.value}` is a file, not a directory",
                      "init_from names the directory that holds config.json, the weights and tokenizer.json")
    elif looks_like_hub_id(source.value):
        local = source.value.split("/")[-1]
        yield Finding(WHERE, f"no local directory `{source.value}`; if it is a Hugging Face Hub id, specc does not "
                             "download models at run time",
                      f"download it first: `huggingface-cli download {source.value} --local-dir {local}`, "
                      f"then set init_from: {local}")
    else:
        elsewhere = "; or pass --no-path-checks if it exists only on the cluster" \
            if os.path.isabs(os.path.expanduser(source.value)) else ""
        yield Finding(WHERE, f"no directory `{source.directory}`",
                      "init_from is a local Hugging Face model directory (config.json, safetensors weights, "
                      f"tokenizer.json), relative to the spec file{elsewhere}")


def init_from_architecture_is_supported(source: InitFrom) -> Iterator[Finding]:
    """The directory's config.json describes an architecture specc's model computes exactly:
    Llama, Mistral, Qwen2 or Mixtral without RoPE scaling or biases specc lacks.

    passes: a Mistral-7B-v0.1 directory   fails: a GPT-2 directory; Llama 3.1 (rope_scaling llama3)
    """
    try:
        source.hf = read_hf_model(source.directory)
    except HFConfigError as error:
        yield Finding(WHERE, str(error), "supported: llama, mistral, qwen2 and mixtral configs "
                                         "(`specc.spec.hf_config.unsupported` lists what else is refused)")


def init_from_has_weights(source: InitFrom) -> Iterator[Finding]:
    """The directory holds safetensors weights: `model.safetensors`, or shards named by
    `model.safetensors.index.json`, every shard present.

    passes: model.safetensors.index.json + its shards   fails: only pytorch_model.bin
    """
    try:
        missing = [path.name for path in weight_files(source.directory) if not path.exists()]
    except HFConfigError as error:
        yield Finding(WHERE, str(error), "convert .bin weights to safetensors (transformers: "
                                         "`model.save_pretrained(dir, safe_serialization=True)`)")
        return
    if missing:
        yield Finding(WHERE, f"{source.directory}: the weights index names missing files {', '.join(missing[:3])}",
                      "the download was incomplete: run it again")
        return
    for path in weight_files(source.directory):
        problem = safetensors_problem(path)
        if problem:
            yield Finding(WHERE, problem, "the download was incomplete or the file is not safetensors: download it again")
            return


def init_from_has_a_tokenizer(source: InitFrom) -> Iterator[Finding]:
    """The tokenizer comes from the same directory (`tokenizer.json`, a fast tokenizer), and
    the spec's `tokenizer.path`, if given, is that file: another tokenizer would feed the
    model ids it was not trained on.

    passes: directory with tokenizer.json, no `tokenizer.path`   fails: no tokenizer.json; `tokenizer.path: other.json`
    """
    try:
        tokenizer, _ = tokenizer_files(source.directory)
    except HFConfigError as error:
        yield Finding(WHERE, str(error), "save the tokenizer with `tokenizer.save_pretrained(dir)` from a fast tokenizer")
        return
    section = source.root.get("tokenizer")
    stated = section.get("path") if isinstance(section, dict) else None
    if isinstance(stated, str) and Path(stated).resolve() != tokenizer.resolve() \
            and Path(source.spec_dir, stated).resolve() != tokenizer.resolve():
        yield Finding(("tokenizer", "path"), f"tokenizer.path `{stated}` is not init_from's tokenizer `{tokenizer}`",
                      "leave tokenizer.path out: it defaults to the tokenizer.json beside the weights")


def model_matches_init_from(source: InitFrom) -> Iterator[Finding]:
    """Model fields the spec states agree with config.json (the spec need not state them; the
    ones it leaves out are taken from config.json). `attention`, `dropout`, `init`,
    `moe.capacity_factor` and `moe.aux_loss_weight` are training choices, free to set.

    passes: `init_from: Mistral-7B-v0.1` alone, or with `num_layers: 32`
    fails:  `init_from: Mistral-7B-v0.1, num_layers: 24` (config.json has num_hidden_layers 32)
    """
    if source.hf is None:
        return
    for key, stated in source.data.items():
        if key in TRAINING_CHOICES:
            continue
        expected = source.hf.fields.get(key)
        if key == "moe" and isinstance(stated, dict) and isinstance(expected, dict):
            for sub, value in stated.items():
                if sub not in MOE_TRAINING_CHOICES and not _same(value, expected.get(sub, _DEFAULT_MOE.get(sub))):
                    yield _differs(source, ("moe", sub), value, expected.get(sub, _DEFAULT_MOE.get(sub)))
        elif not _same(stated, expected):
            yield _differs(source, (key,), stated, expected)


_DEFAULT_MOE = {"expert_ffn_hidden_size": None, "num_shared_experts": 0, "layer_frequency": 1, "first_k_dense": 0}


def _same(stated, expected) -> bool:
    if isinstance(stated, bool) or isinstance(expected, bool):
        return stated is expected
    if isinstance(stated, (int, float)) and isinstance(expected, (int, float)):
        return float(stated) == float(expected)
    return stated == expected


def _differs(source: InitFrom, path: tuple, stated, expected) -> Finding:
    name = ".".join(path)
    hf_name = HF_NAMES.get(name, path[-1])
    shown = source.hf.config.get(hf_name, source.hf.model_type) if hf_name in source.hf.config else expected
    return Finding(("model", *path), f"model.{name} is {json.dumps(stated)} but {source.directory / 'config.json'} "
                                     f"gives {json.dumps(expected)} ({hf_name}: {json.dumps(shown)})",
                   f"leave model.{name} out (it is read from config.json) or set it to {json.dumps(expected)}")


SOURCE_RULES: tuple[tuple[str, Callable[[InitFrom], Iterator[Finding]]], ...] = (
    ("R220", init_from_is_a_local_directory),
    ("R221", init_from_architecture_is_supported),
    ("R222", init_from_has_weights),
    ("R223", init_from_has_a_tokenizer),
    ("R224", model_matches_init_from),
)
"""Run in order; the first that fails stops the rest (each needs the one before)."""


def apply_init_from(data: dict, source_map: SourceMap, spec_dir: Path, check_absolute: bool = False) -> list[Diagnostic]:
    """Check `model.init_from` and complete the raw spec from the HF directory (in place); an
    absolute directory absent here is checked only when `check_absolute` (module docstring)."""
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("init_from"), str):
        return []
    value = model["init_from"]
    directory = Path(os.path.normpath(spec_dir / os.path.expanduser(value)))
    if os.path.isabs(os.path.expanduser(value)) and not directory.exists() and not check_absolute:
        _elsewhere(data, directory)
        return []
    source = InitFrom(model, value, directory, data, spec_dir)
    diagnostics = []
    for code, rule in SOURCE_RULES:
        findings = list(rule(source))
        diagnostics += [Diagnostic(f.severity, code, _as_written(f.message, source), source_map.value_at(f.path),
                                   format_path(f.path), hint=f.hint and _as_written(f.hint, source))
                        for f in findings]
        if any(f.severity == "error" for f in findings) and code != "R224":
            return diagnostics
    _complete(data, source)
    return diagnostics


def _elsewhere(data: dict, directory: Path) -> None:
    """An init_from directory that exists only on the cluster: the stages read its tokenizer.json."""
    tokenizer = data.setdefault("tokenizer", {})
    if isinstance(tokenizer, dict):
        tokenizer.setdefault("path", str(directory / "tokenizer.json"))


def _as_written(text: str, source: InitFrom) -> str:
    """Paths as the spec wrote them (messages stay the same on every machine)."""
    return text.replace(str(source.directory), source.value.rstrip("/"))


def _complete(data: dict, source: InitFrom) -> None:
    """Fill what the spec leaves out from the directory; make init_from absolute."""
    model = data["model"]
    for key, value in source.hf.fields.items():
        if key == "moe" and isinstance(model.get("moe"), dict):
            model["moe"] = {**value, **model["moe"]}
        elif key not in model:
            model[key] = value
    model["init_from"] = str(source.directory)
    tokenizer_json, tokenizer_config = tokenizer_files(source.directory)
    tokenizer = data.setdefault("tokenizer", {})
    if isinstance(tokenizer, dict):
        tokenizer.setdefault("path", str(tokenizer_json))
        special = [token_text(tokenizer_config.get(key)) for key in ("eos_token", "pad_token")]
        if special[0] and "special_tokens" not in tokenizer:
            tokenizer["special_tokens"] = [t for t in dict.fromkeys(special) if t]
    if chat_template(tokenizer_config) is not None:
        # SFT stages that name no template train with the directory's own
        for stage in data.get("alignment") or []:
            if isinstance(stage, dict) and stage.get("type") == "sft" and "chat_template" not in stage:
                stage["chat_template"] = str(tokenizer_json.with_name("tokenizer_config.json"))


def suppresses(diagnostic: Diagnostic, init_from: list[Diagnostic]) -> bool:
    """A model field (or the tokenizer, R263) reported missing when init_from failed to supply it
    says nothing new."""
    failed = any(d.is_error and d.code != "R224" for d in init_from)
    return failed and (diagnostic.code == "S002" and diagnostic.path.startswith("model.") or diagnostic.code == "R263")
