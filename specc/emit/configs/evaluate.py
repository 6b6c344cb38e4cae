"""Torch-free: the `eval` stage's config, built from a validated Spec (called by the bundle emitter).

config = {
  "eval": EvalSpec json, with task and perplexity paths made absolute against the spec's directory,
  "model": ModelSpec json,
  "checkpoints": {label: model directory relative to run_dir}, in pipeline order: the pretrained
                 model, then the output of every alignment stage that trains weights,
  "tokenizer": tokenizer.json path relative to run_dir (or the spec's `tokenizer.path`),
}
"""

from __future__ import annotations

import os

from specc.spec.root import Spec

POLICY_TYPES = ("sft", "dpo", "ppo")
"""Alignment stages whose output is a policy: evaluated, and served by deploy (a reward model is not a policy)."""


def absolute(path: str, spec_dir: str) -> str:
    """A spec path as the stage will read it: relative paths are relative to the spec file."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(spec_dir, path))


def tokenizer_location(spec: Spec, spec_dir: str) -> str:
    if spec.tokenizer.path:
        return absolute(spec.tokenizer.path, spec_dir)
    return "tokenize/tokenizer.json"


def evaluated_models(spec: Spec) -> dict[str, str]:
    """label -> model directory (relative to run_dir) of every model the eval stage scores."""
    models = {"pretrain": "pretrain/final"}
    for stage in spec.alignment:
        if stage.type in POLICY_TYPES:
            models[stage.name] = f"{stage.name}/final"
    return models


def build_eval_config(spec: Spec, spec_dir: str) -> dict:
    evaluation = spec.eval.model_dump(mode="json")
    for item in evaluation["perplexity"] + evaluation["tasks"]:
        item["path"] = absolute(item["path"], spec_dir)
        if item.get("fewshot_path"):
            item["fewshot_path"] = absolute(item["fewshot_path"], spec_dir)
    return {"eval": evaluation, "model": spec.model.model_dump(mode="json"),
            "checkpoints": evaluated_models(spec), "tokenizer": tokenizer_location(spec, spec_dir)}


def eval_wanted(spec: Spec) -> bool:
    """The eval stage runs when the spec names anything to evaluate."""
    return bool(spec.eval.tasks or spec.eval.perplexity)
