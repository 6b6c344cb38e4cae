"""The stage graph a spec describes: which stages run, and which model and tokenizer each one
starts from. Torch-free and filesystem-free (validate, plan and the emitter all ask it).

Why one module: the registry (`specc.pipeline`) decides which stages a bundle holds, the config
builders (`specc.emit.configs`) tell each stage where its input model and tokenizer are, validate
(R260-R264) rejects a graph with nothing to start from, and the planner charges exactly the
stages the bundle runs. Each of them asks these functions instead of keeping its own rule.

What "pretraining" means (`pretrains`):
- a `corpus` is given: the data, tokenize and pretrain stages run. With `model.init_from` too this
  is continued pretraining: pretrain starts from the Hugging Face directory's weights;
- no corpus but `model.init_from`: a fine-tune. There is no data, tokenize or pretrain stage; the
  first alignment stage starts from the directory, whose tokenizer (and chat template) every stage
  uses, and eval/deploy take the last trained stage's model;
- neither: the spec describes a pretraining run to plan (`specc plan` charges its pretrain stage).
  Nothing produces its weights, so a stage that needs them is refused (R260-R262).

Model locations are relative to the run directory (`pretrain/final`, `<stage>/final`) or absolute
(a Hugging Face directory, a checkpoint path from the spec).
"""

from __future__ import annotations

import os

from specc.catalog import load_catalog
from specc.spec.root import Spec

PRETRAINED = "pretrain"
"""What an alignment stage's `init_from: pretrain` (the default) names: the pretrained model."""
POLICY_TYPES = ("sft", "dpo", "ppo")
"""Alignment stages whose output is a policy: evaluated, and served by deploy (a reward model is not a policy)."""
DATA_STAGES = ("data", "tokenize")
"""The stages that prepare a corpus."""
BASE_LABEL = "base"
"""The eval label of `model.init_from` when no pretrain stage trains it (a pretrained model is `pretrain`)."""


def absolute(path: str, spec_dir: str) -> str:
    """A spec path as the stage will read it: relative paths are relative to the spec file."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(spec_dir, path))


def is_tpu(spec: Spec) -> bool:
    accelerator = load_catalog().get(spec.cluster.accelerator)
    return accelerator is not None and accelerator.kind == "tpu"


def training_stage(spec: Spec) -> str:
    """The name the pretrain stage takes in the bundle: `pretrain_tpu` on TPUs (torch-xla), else `pretrain`."""
    return "pretrain_tpu" if is_tpu(spec) else "pretrain"


def prepares_data(spec: Spec) -> bool:
    """The data and tokenize stages run when there is a corpus to prepare."""
    return spec.corpus is not None


def pretrains(spec: Spec) -> bool:
    """Whether the spec has a pretrain stage (module docstring): it has a corpus to train on, or
    it has no `model.init_from` to start from instead (a pretraining run to plan)."""
    return spec.corpus is not None or spec.model.init_from is None


def eval_wanted(spec: Spec) -> bool:
    """The eval stage runs when the spec names anything to evaluate."""
    return bool(spec.eval.tasks or spec.eval.perplexity or spec.eval.lm_eval)


def stage_names(spec: Spec) -> list[str]:
    """The stages the spec's bundle holds, by name, in pipeline order (the registry's builders
    emit exactly these; the plan lists them)."""
    names = list(DATA_STAGES) if prepares_data(spec) else []
    if pretrains(spec):
        names.append(training_stage(spec))
    names += [stage.name for stage in spec.alignment]
    if eval_wanted(spec):
        names.append("eval")
    if spec.deploy.targets:
        names.append("deploy")
    return names


def pretrained_model(spec: Spec, spec_dir: str | None = None) -> str | None:
    """The model `pretrain` names: the pretrain stage's output when it trains on a corpus, else
    `model.init_from` (the directory every fine-tune starts from, made absolute against
    `spec_dir` when given); None when neither exists (a pretrain stage without a corpus
    produces nothing)."""
    if spec.corpus is not None:
        return "pretrain/final"
    init_from = spec.model.init_from
    return absolute(init_from, spec_dir) if init_from is not None and spec_dir is not None else init_from


def start_model(spec: Spec, reference: str, earlier: set[str], spec_dir: str) -> str | None:
    """Where a stage that starts from `reference` (`pretrain`, an earlier stage's name, or a
    checkpoint path) finds its weights; None when `pretrain` names no model."""
    if reference == PRETRAINED:
        return pretrained_model(spec, spec_dir)
    if reference in earlier:
        return f"{reference}/final"
    return absolute(reference, spec_dir)


def policies(spec: Spec) -> list[str]:
    """Names of the alignment stages that train a policy, in order."""
    return [stage.name for stage in spec.alignment if stage.type in POLICY_TYPES]


def evaluated_models(spec: Spec, spec_dir: str | None = None) -> dict[str, str]:
    """label -> model directory of every model the eval stage scores, in pipeline order: the
    pretrained (or `init_from`) model, then each trained policy."""
    models = {}
    base = pretrained_model(spec, spec_dir)
    if base is not None:
        models[PRETRAINED if spec.corpus is not None else BASE_LABEL] = base
    for name in policies(spec):
        models[name] = f"{name}/final"
    return models


def final_model(spec: Spec, spec_dir: str | None = None) -> str | None:
    """The model deploy serves: the last alignment stage that trains a policy, else the
    pretrained (or `init_from`) model; None when there is none."""
    names = policies(spec)
    return f"{names[-1]}/final" if names else pretrained_model(spec, spec_dir)


def tokenizer_location(spec: Spec, spec_dir: str) -> str | None:
    """tokenizer.json every stage after tokenize reads: `tokenizer.path` (under `model.init_from`,
    the directory's own, filled in by validate), else the tokenize stage's output; None when the
    spec has neither."""
    if spec.tokenizer.path:
        return absolute(spec.tokenizer.path, spec_dir)
    return "tokenize/tokenizer.json" if prepares_data(spec) else None


def heldout_tokens(spec: Spec) -> str | None:
    """Token shards with a validation split (deploy measures perplexity and distils drafts on
    them): the tokenize stage's, None without a corpus."""
    return "tokenize/shards" if prepares_data(spec) else None
