"""Torch-free: configs of the alignment stages and of the deploy stage, built from a validated
Spec (called by the bundle emitter; see `specc.runtime.align.common` and
`specc.runtime.deploy.stage` for what each key means).

Models and data produced by earlier stages are named relative to the run directory
(`pretrain/final`, `<stage>/final`, `<constitutional stage>/data.jsonl`); files named in the
spec are made absolute against the spec's directory. Which model a stage starts from (`pretrain`
is `model.init_from` when the spec has no pretrain stage) is `specc.stage_graph`'s to say.
"""

from __future__ import annotations

from pathlib import Path

from specc.spec.alignment import stage_seq_len
from specc.spec.parallel import ParallelSpec
from specc.spec.root import Spec
from specc.stage_graph import absolute, final_model, heldout_tokens, start_model, tokenizer_location

DEFAULT_CHAT_TEMPLATE = "chatml"


def _model_dir(spec: Spec, reference: str, earlier: dict[str, str], spec_dir: str) -> str:
    """`pretrain`, an earlier stage's name, or a checkpoint directory path (validate, R260,
    refuses `pretrain` when nothing produces it)."""
    model = start_model(spec, reference, set(earlier), spec_dir)
    if model is None:
        raise ValueError(f"`{reference}` names no model: the spec has no corpus and no model.init_from")
    return model


def base_chat_template(spec: Spec) -> str | None:
    """The chat template `model.init_from`'s tokenizer_config.json carries (its path), if the
    directory is here and has one: what stages that name none use (validate fills SFT stages'
    `chat_template` with it; a DPO stage without an SFT before it takes it from here)."""
    if not spec.model.init_from:
        return None
    from specc.spec.hf_config import chat_template, tokenizer_files, HFConfigError

    try:
        tokenizer, config = tokenizer_files(Path(spec.model.init_from))
    except HFConfigError:
        return None
    return str(tokenizer.with_name("tokenizer_config.json")) if chat_template(config) is not None else None


def _data_path(value: str, constitutional: set[str], spec_dir: str) -> str:
    return f"{value}/data.jsonl" if value in constitutional else absolute(value, spec_dir)


def _template(name: str, spec_dir: str) -> str:
    return name if name in ("chatml", "llama3") else absolute(name, spec_dir)


def special_tokens(spec: Spec) -> dict:
    """The end-of-document and padding tokens the stages encode with (the tokenizer's first
    special token is EOS; the second, if any, pads)."""
    special = spec.tokenizer.special_tokens
    return {"eos_token": special[0], **({"pad_token": special[1]} if len(special) > 1 else {})}


def runtime_params(spec: Spec, stage, plan: dict | None) -> dict:
    """How the distributed alignment runtime computes the stage (`specc.runtime.align.distributed`):
    the plan's alignment precision and devices, the spec's recompute and micro-batch, and the plan's predicted
    step time and peak memory (logged beside the measurements)."""
    from specc.plan.alignment_memory import alignment_devices, alignment_precision

    parallel = spec.parallel if isinstance(spec.parallel, ParallelSpec) else ParallelSpec()
    entry = next((e for e in (plan or {}).get("alignment") or [] if e.get("stage") == stage.name), {})
    return {"precision": entry.get("precision") or alignment_precision(spec),
            "devices": entry.get("devices") or alignment_devices(spec),
            "recompute": parallel.recompute, "selective_policy": parallel.selective_policy,
            "micro_batch": parallel.micro_batch,
            "predicted": {"step_s": entry.get("step_s"), "peak_memory_gib": entry.get("per_device_gib")}}


def build_alignment_configs(spec: Spec, spec_dir: str, plan: dict | None = None) -> list[tuple[str, dict]]:
    """(stage name, config) for every alignment stage, in spec order; `plan` (the plan's
    `alignment` entries) gives each its precision, devices and predictions."""
    earlier: dict[str, str] = {}
    constitutional: set[str] = set()
    template = base_chat_template(spec) or DEFAULT_CHAT_TEMPLATE
    out = []
    # the loss implementation the policies' log-probabilities use (`parallel.loss`; defaults under `auto`)
    parallel = spec.parallel if isinstance(spec.parallel, ParallelSpec) else ParallelSpec()
    for stage in spec.alignment:
        body = stage.model_dump(mode="json")
        if stage.type == "sft":
            template = _template(stage.chat_template, spec_dir)
            body["chat_template"] = template
        for key in ("data", "prompts"):
            if key in body:
                body[key] = _data_path(body[key], constitutional, spec_dir)
        config = {"stage": body, "model": spec.model.model_dump(mode="json"),
                  "init_checkpoint": _model_dir(spec, stage.init_from, earlier, spec_dir),
                  "tokenizer": tokenizer_location(spec, spec_dir), "chat_template": template,
                  "seq_len": stage_seq_len(stage, spec.schedule.seq_len, spec.model.max_seq_len),
                  "seed": spec.schedule.seed, "checkpoint_interval": spec.schedule.checkpoint_interval,
                  "loss": parallel.loss, "loss_chunk_tokens": parallel.loss_chunk_tokens,
                  **special_tokens(spec), **runtime_params(spec, stage, plan)}
        if stage.type == "dpo":
            reference = stage.init_from if stage.reference == "init" else stage.reference
            config["reference_checkpoint"] = _model_dir(spec, reference, earlier, spec_dir)
        if stage.type == "ppo":
            if earlier.get(stage.reward_model) != "reward_model":
                raise ValueError(f"alignment stage {stage.name!r}: reward_model {stage.reward_model!r} is not an "
                                 "earlier reward_model stage")
            config["reward_checkpoint"] = f"{stage.reward_model}/final"
        out.append((stage.name, config))
        earlier[stage.name] = stage.type
        if stage.type == "constitutional":
            constitutional.add(stage.name)
    return out


def trained_chat_template(spec: Spec, spec_dir: str) -> str | None:
    """The chat template of the last SFT stage (what the served model was taught), else the one
    `model.init_from` came with; None without either."""
    templates = [_template(stage.chat_template, spec_dir) for stage in spec.alignment if stage.type == "sft"]
    return templates[-1] if templates else base_chat_template(spec)


def build_deploy_config(spec: Spec, spec_dir: str) -> dict:
    special = spec.tokenizer.special_tokens
    return {"chat_template": trained_chat_template(spec, spec_dir),"targets": [target.model_dump(mode="json") for target in spec.deploy.targets],
            "model": spec.model.model_dump(mode="json"), "checkpoint": final_model(spec, spec_dir),
            "tokenizer": tokenizer_location(spec, spec_dir), "shard_dir": heldout_tokens(spec),
            "eos_token": special[0], "pad_token": "<|pad|>" if "<|pad|>" in special else None,
            "seq_len": min(spec.schedule.seq_len, spec.model.max_seq_len), "seed": spec.schedule.seed,
            "measure_windows": 32, "draft_steps": 200, "draft_batch_size": 16, "draft_lr": 1e-3,
            "speculative_prompts": 8, "speculative_prompt_tokens": 32, "speculative_new_tokens": 64}
