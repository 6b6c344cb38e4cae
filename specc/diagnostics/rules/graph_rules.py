"""Rules about the stage graph (`specc.stage_graph`): every stage has a model and a tokenizer to
start from, and every input it reads is produced by an earlier stage (R260-R264).

Why: a spec without a corpus has no data, tokenize or pretrain stage, so `pretrain` (an alignment
stage's default `init_from`), the pretrained model eval scores, and the tokenizer and held-out
tokens later stages read exist only when `model.init_from` (or `tokenizer.path`) supplies them.
Without these rules such a spec validated and failed when its stage started.
"""

from __future__ import annotations

from collections.abc import Iterator

from specc.diagnostics.rules.base import Finding
from specc.spec.root import Spec
from specc.stage_graph import PRETRAINED, eval_wanted, final_model, evaluated_models, pretrained_model, \
    tokenizer_location

NO_MODEL = "the spec has no corpus (so no pretrain stage produces weights) and no model.init_from"
START_HINT = ("set model.init_from to a local Hugging Face model directory, add a corpus to pretrain on, "
              "or start from a checkpoint directory path")


def alignment_starts_from_a_model(spec: Spec) -> Iterator[Finding]:
    """An alignment stage that starts from `pretrain` (the default `init_from`, or a DPO
    `reference: init` of such a stage) needs a pretrained model: a corpus to pretrain on, or
    `model.init_from`.

    passes: no corpus, `model: {init_from: Llama-3-8B}`, `alignment: [{type: sft, name: sft, data: sft.jsonl}]`
    fails:  no corpus, no model.init_from, `alignment: [{type: sft, name: sft, data: sft.jsonl}]`
    """
    if pretrained_model(spec) is not None:
        return
    for index, stage in enumerate(spec.alignment):
        if stage.init_from == PRETRAINED:
            yield Finding(("alignment", index, "init_from"),
                          f"alignment stage `{stage.name}` starts from `pretrain`, but {NO_MODEL}", START_HINT)


def eval_has_a_model(spec: Spec) -> Iterator[Finding]:
    """The eval stage scores the pretrained (or `model.init_from`) model and every trained
    policy: at least one must exist.

    passes: eval tasks with a corpus, or with model.init_from     fails: eval tasks, no corpus, no init_from, no alignment
    """
    if eval_wanted(spec) and not evaluated_models(spec):
        section = "tasks" if spec.eval.tasks else "perplexity" if spec.eval.perplexity else "lm_eval"
        yield Finding(("eval", section), f"nothing to evaluate: {NO_MODEL}, and no alignment stage trains a policy",
                      START_HINT)


def deploy_has_a_model(spec: Spec) -> Iterator[Finding]:
    """The deploy stage serves the last trained policy, else the pretrained (or
    `model.init_from`) model: one must exist.

    passes: deploy targets after an sft stage, or with model.init_from    fails: deploy targets, no corpus, no init_from, no alignment
    """
    if spec.deploy.targets and final_model(spec) is None:
        yield Finding(("deploy", "targets"), f"nothing to deploy: {NO_MODEL}, and no alignment stage trains a policy",
                      START_HINT)


def stages_have_a_tokenizer(spec: Spec) -> Iterator[Finding]:
    """Alignment, eval and deploy read a tokenizer: the tokenize stage's (with a corpus),
    `tokenizer.path`, or `model.init_from`'s tokenizer.json (validate fills tokenizer.path with it).

    passes: no corpus, `model: {init_from: Llama-3-8B}`     fails: no corpus, sft from `/ckpt/base`, no tokenizer.path
    """
    readers = [(("alignment", index), stage.name) for index, stage in enumerate(spec.alignment)]
    readers += [(("eval",), "eval")] if eval_wanted(spec) else []
    readers += [(("deploy", "targets"), "deploy")] if spec.deploy.targets else []
    if readers and tokenizer_location(spec, ".") is None:
        # located at the first stage that would read it: the spec has no tokenizer section to point at
        yield Finding(readers[0][0], f"no tokenizer for {', '.join(name for _, name in readers)}: the spec has no "
                                     "corpus (so no tokenize stage) and no tokenizer.path",
                      "set tokenizer.path to a tokenizer.json, or model.init_from to a Hugging Face directory "
                      "(its tokenizer.json is used)")


def speculative_needs_heldout_text(spec: Spec) -> Iterator[Finding]:
    """Speculative decoding prompts (and a distilled draft's training text) are held-out corpus
    tokens from the tokenize stage, and GPTQ calibrates on its training split: a deploy target
    with `speculative` or `quantization: gptq` needs a corpus.

    passes: `speculative: {...}` with a corpus     fails: `speculative: {...}` in a fine-tune (model.init_from, no corpus)
    """
    if spec.corpus is not None:
        return
    for index, target in enumerate(spec.deploy.targets):
        if target.speculative is not None:
            yield Finding(("deploy", "targets", index, "speculative"),
                          f"deploy target `{target.name}`: speculative decoding is measured on (and a draft distilled "
                          "from) held-out corpus tokens, and the spec has no corpus",
                          "add a corpus, or leave speculative out of this target")
        if target.quantization == "gptq":
            yield Finding(("deploy", "targets", index, "quantization"),
                          f"deploy target `{target.name}`: GPTQ calibrates on the tokenize stage's training split, "
                          "and the spec has no corpus",
                          "use `quantization: int4` (round-to-nearest, no calibration), or export the trained "
                          "model with `specc export --quantization gptq --calibration FILE.txt`")
