"""Torch-free: the `eval` stage's config, built from a validated Spec (called by the bundle emitter).

config = {
  "eval": EvalSpec json, with task and perplexity paths and `lm_eval.include_path` (the user's
          lm-eval task YAMLs, read in place like the task files) made absolute against the spec's directory,
  "model": ModelSpec json,
  "checkpoints": {label: model directory relative to run_dir, or absolute}, in pipeline order:
                 the pretrained model (`pretrain`, or `base`: `model.init_from` when there is no
                 pretrain stage), then the output of every alignment stage that trains weights
                 (`specc.stage_graph.evaluated_models`),
  "tokenizer": tokenizer.json path relative to run_dir (or the spec's `tokenizer.path`),
  "eos_token", "pad_token": the tokenizer's end-of-document and padding tokens (`special_tokens`),
}
"""

from __future__ import annotations

from specc.spec.root import Spec
from specc.stage_graph import POLICY_TYPES, absolute, eval_wanted, evaluated_models, tokenizer_location

__all__ = ["POLICY_TYPES", "absolute", "build_eval_config", "eval_wanted", "tokenizer_location"]


def build_eval_config(spec: Spec, spec_dir: str) -> dict:
    evaluation = spec.eval.model_dump(mode="json")
    for item in evaluation["perplexity"] + evaluation["tasks"]:
        item["path"] = absolute(item["path"], spec_dir)
        if item.get("fewshot_path"):
            item["fewshot_path"] = absolute(item["fewshot_path"], spec_dir)
    if evaluation["lm_eval"]:
        evaluation["lm_eval"]["include_path"] = absolute(evaluation["lm_eval"]["include_path"], spec_dir)
    from specc.emit.configs.alignment import special_tokens

    return {"eval": evaluation, "model": spec.model.model_dump(mode="json"),
            "checkpoints": evaluated_models(spec, spec_dir), "tokenizer": tokenizer_location(spec, spec_dir),
            **special_tokens(spec)}
