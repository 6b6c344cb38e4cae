"""Rules about the post-training stages (alignment, eval, deploy) that mirror what their runtimes
would refuse or silently do differently: lengths past the model's context, generation that
leaves no room for a prompt, learning rates far outside practice, exports and quantizations the
deploy stage does not produce, draft models that could not be built."""

from __future__ import annotations

import math
from collections.abc import Iterator

from specc.diagnostics.rules.base import Finding
from specc.diagnostics.rules.data_rules import regex_problem
from specc.evaltasks import generates
from specc.spec.alignment import stage_seq_len
from specc.spec.capabilities import (DEPLOY_FORMAT_QUANTIZATIONS, DEPLOY_FORMATS, DEPLOY_QUANTIZATIONS,
                                     HF_QUANTIZED_MOE, hf_export_incompatibilities)
from specc.spec.deploy import serving_context
from specc.spec.model import ModelSpec
from specc.spec.root import Spec

ADAMW_LR_CEILING = 1e-2
"""AdamW learning rates above this are far outside published practice (pretraining 6e-5 to 6e-4,
GPT-3 Table 2.1; 3e-4 for Llama 3 8B; SFT 2e-5, Llama 2 section 3.1; DPO 5e-7 to 1e-6,
Rafailov et al. 2023 and Zephyr; PPO 1e-6 to 1e-5, InstructGPT appendix C)."""

def alignment_lengths_fit_model(spec: Spec) -> Iterator[Finding]:
    """An alignment stage trains and generates within its sequence length (`stage_seq_len`), which
    cannot exceed model.max_seq_len: position tables and RoPE caches end there, and so does
    decoding. PPO and constitutional stages generate `max_new_tokens` after a prompt, so those
    must leave room for one.

    passes: `seq_len: 2048` with `max_seq_len: 4096`; ppo `max_new_tokens: 256` within 2048
    fails:  `seq_len: 100000` with `max_seq_len: 256`; ppo `max_new_tokens: 4096` within 2048
    """
    model, schedule = spec.model, spec.schedule
    for index, stage in enumerate(spec.alignment):
        length = stage_seq_len(stage, schedule.seq_len, model.max_seq_len)
        if length > model.max_seq_len:
            yield Finding(("alignment", index, "seq_len"),
                          f"seq_len ({length}) exceeds model.max_seq_len ({model.max_seq_len})",
                          f"use seq_len <= {model.max_seq_len} (or omit it for "
                          f"{min(schedule.seq_len, model.max_seq_len)}, the pretraining length)")
            continue
        new_tokens = getattr(stage, "max_new_tokens", None)
        if new_tokens is not None and new_tokens >= length:
            within = "the model's max_seq_len" if stage.type == "constitutional" else "the stage's seq_len"
            yield Finding(("alignment", index, "max_new_tokens"),
                          f"max_new_tokens ({new_tokens}) leaves no room for a prompt within {within} ({length})",
                          f"use max_new_tokens < {length}, e.g. {max(1, length // 4)}")


def alignment_values_are_plausible(spec: Spec) -> Iterator[Finding]:
    """Alignment learning rates above 1e-2 are far outside practice (fine-tuning uses 1e-7 to
    1e-4), and a DPO beta above 1 is a KL constraint so strong the policy barely moves (Rafailov
    et al. 2023 use 0.1 to 0.5).

    passes: sft `lr: 2e-5`; dpo `beta: 0.1`      fails (warning): sft `lr: 0.5`; dpo `beta: 5`
    """
    for index, stage in enumerate(spec.alignment):
        lr = getattr(stage, "lr", None)
        if lr is not None and lr > ADAMW_LR_CEILING:
            yield Finding(("alignment", index, "lr"),
                          f"lr ({lr:g}) is far above the learning rates {stage.type} stages use with AdamW",
                          "typical: sft 2e-5, reward_model 1e-5, dpo 5e-7 to 1e-6, ppo 1e-6 to 1e-5", "warning")
        if stage.type == "dpo" and stage.beta > 1:
            yield Finding(("alignment", index, "beta"),
                          f"DPO beta ({stage.beta:g}) above 1 keeps the policy very close to the reference",
                          "typical beta: 0.1 (Rafailov et al. 2023 use 0.1 to 0.5)", "warning")


def generation_fits_context(spec: Spec) -> Iterator[Finding]:
    """A generative eval task (`generative`, `gsm8k`) writes `max_new_tokens` after its prompt within model.max_seq_len;
    at or past it the prompt would be cut to one token (the question lost). Its
    `answer_pattern` must compile as a Python regular expression.

    passes: `max_new_tokens: 64` with `max_seq_len: 2048`     fails: `max_new_tokens: 4096` with `max_seq_len: 2048`
    """
    context = spec.model.max_seq_len
    for index, task in enumerate(spec.eval.tasks):
        if generates(task.type) and task.max_new_tokens >= context:
            yield Finding(("eval", "tasks", index, "max_new_tokens"),
                          f"max_new_tokens ({task.max_new_tokens}) leaves no room for the prompt within model.max_seq_len ({context})",
                          f"use max_new_tokens < {context}, e.g. {max(1, min(256, context // 4))}")
        if task.answer_pattern is not None:
            problem = regex_problem(task.answer_pattern)
            if problem:
                yield Finding(("eval", "tasks", index, "answer_pattern"),
                              f"{task.answer_pattern!r} is not a valid regular expression: {problem}",
                              "use Python `re` syntax; the first group is the answer, e.g. `#### (\\-?[0-9.,]+)`")


def deploy_target_is_implemented(spec: Spec) -> Iterator[Finding]:
    """The deploy stage writes only the formats in `DEPLOY_FORMATS`, each with the quantizations
    `DEPLOY_FORMAT_QUANTIZATIONS` lists for it (`hf`: none, int8, int4, gptq in the compressed-tensors
    format serving engines load; `safetensors`: none, int8, nf4 in specc's own layout), and `format: hf`
    only for models a Llama, Mistral, Qwen2 or Mixtral config can express (`hf_export_incompatibilities`).

    passes: `quantization: gptq, format: hf`; `quantization: nf4, format: safetensors`
    fails:  `quantization: fp8`; `quantization: nf4, format: hf`; `format: hf` with `norm: layernorm`;
            `quantization: int8, format: hf` for a MoE model
    """
    reasons = hf_export_incompatibilities(spec.model)
    for index, target in enumerate(spec.deploy.targets):
        where = ("deploy", "targets", index)
        if target.format not in DEPLOY_FORMATS:
            yield Finding(where + ("format",), f"format `{target.format}` is not implemented by the deploy stage",
                          f"implemented: {', '.join(DEPLOY_FORMATS)}")
            continue
        written = DEPLOY_FORMAT_QUANTIZATIONS[target.format]
        if target.quantization not in DEPLOY_QUANTIZATIONS:
            yield Finding(where + ("quantization",),
                          f"quantization `{target.quantization}` is not implemented by the deploy stage",
                          f"implemented: {', '.join(written)} with format: {target.format}")
        elif target.quantization not in written:
            other = next(f for f, qs in DEPLOY_FORMAT_QUANTIZATIONS.items() if target.quantization in qs)
            yield Finding(where + ("quantization",),
                          f"format `{target.format}` does not write `{target.quantization}` weights "
                          f"(format `{other}` does)",
                          f"with format: {target.format} use one of {', '.join(written)}"
                          + (" (int4 or gptq for 4-bit weights serving engines load)" if target.format == "hf" else ""))
        if target.format == "hf" and target.quantization in written and target.quantization != "none" and spec.model.moe:
            yield Finding(where + ("quantization",),
                          f"quantization `{target.quantization}` with format `hf` for a mixture-of-experts model: {HF_QUANTIZED_MOE}",
                          "use quantization: none with format: hf, or format: safetensors (int8, nf4)")
        if target.format == "hf" and reasons:
            yield Finding(where + ("format",),
                          "format `hf` exports Llama, Mistral, Qwen2 and Mixtral models; this model has " + ", ".join(reasons),
                          "use format: safetensors (specc's layout, any model)")


def quantization_groups_divide_linears(spec: Spec) -> Iterator[Finding]:
    """int4 and GPTQ (`format: hf`) store one scale per `group_size` input features of each quantized
    linear (compressed-tensors `strategy: group`), so the group size must divide every such width:
    the hidden size (q/k/v, gate/up, routers stay unquantized), the attention width (o) and, without
    MoE, the FFN width (down; expert stacks stay unquantized).

    passes: `quantization: int4, group_size: 64` with hidden 4096, FFN 14336
    fails:  `quantization: gptq, group_size: 128` with FFN 11000
    """
    model = spec.model
    widths = {"hidden_size": model.hidden_size, "num_heads x head_size": model.num_heads * model.head_size,
              **({"ffn_hidden_size": model.ffn_hidden_size} if model.moe is None else {})}
    for index, target in enumerate(spec.deploy.targets):
        if target.format != "hf" or target.quantization not in ("int4", "gptq"):
            continue
        uneven = [f"{name} {width}" for name, width in widths.items() if width % target.group_size]
        if uneven:
            common = math.gcd(*widths.values())
            yield Finding(("deploy", "targets", index, "group_size"),
                          f"group_size {target.group_size} does not divide {', '.join(uneven)}",
                          f"use a group_size that divides {common}, e.g. {math.gcd(common, 128)}")


def serving_context_fits_model(spec: Spec) -> Iterator[Finding]:
    """A target serves at most model.max_seq_len tokens of context (the HF export's
    `max_position_embeddings`, the end of specc's position tables and KV cache), and a
    speculative draft must attend over the same context.

    passes: `max_context: 8192` with `max_seq_len: 8192`     fails: `max_context: 32k` with `max_seq_len: 8192`
    """
    model = spec.model
    for index, target in enumerate(spec.deploy.targets):
        context = serving_context(target, model)
        if context > model.max_seq_len:
            yield Finding(("deploy", "targets", index, "max_context"),
                          f"max_context ({context}) exceeds model.max_seq_len ({model.max_seq_len})",
                          f"use max_context <= {model.max_seq_len} (or omit it for the model's whole context)")
            continue
        draft = target.speculative.draft if target.speculative is not None else None
        if isinstance(draft, ModelSpec) and draft.max_seq_len < context:
            yield Finding(("deploy", "targets", index, "speculative", "draft", "max_seq_len"),
                          f"the draft's max_seq_len ({draft.max_seq_len}) is shorter than the context served ({context})",
                          f"set the draft's max_seq_len to {context}, or lower max_context")


def draft_architecture_is_valid(spec: Spec) -> Iterator[Finding]:
    """A speculative draft given as an architecture is built and distilled by the deploy stage,
    so it must pass the same architecture rules as `model` (R101, R102, R113, R114), reported
    at the draft's keys.

    passes: draft `hidden_size: 256, num_heads: 4`     fails: draft `hidden_size: 256, num_heads: 3`
    """
    from specc.diagnostics.rules import RULES

    architecture_rules = [rule for rule in RULES if rule.needs == ("model",)]
    for index, target in enumerate(spec.deploy.targets):
        draft = target.speculative.draft if target.speculative is not None else None
        if not isinstance(draft, ModelSpec):
            continue
        as_model = spec.model_copy(update={"model": draft})
        where = ("deploy", "targets", index, "speculative", "draft")
        for rule in architecture_rules:
            for finding in rule.check(as_model):
                yield Finding(where + finding.path[1:], f"draft: {finding.message} ({rule.code})",
                              finding.hint, finding.severity)


def ppo_placement_runs(spec: Spec) -> Iterator[Finding]:
    """PPO's four models are placed as the alignment runtime executes them: colocated, each
    FSDP2-sharded over every device (`Capabilities.alignment_placements`). The split placement
    (`colocate: false`: policy and value on half the devices, reference and reward model on the
    other half) is not executed, so the plan would charge a program that does not run.

    passes: ppo `colocate: true` (the default)      fails: ppo `colocate: false`
    """
    for index, stage in enumerate(spec.alignment):
        if stage.type == "ppo" and not stage.colocate:
            yield Finding(("alignment", index, "colocate"),
                          "colocate: false (policy + value apart from reference + reward model) is not executed by "
                          "specc's alignment runtime: it shards all four models over every device",
                          "remove colocate (the default, true, is what runs)")


def alignment_runs_on_target(spec: Spec) -> Iterator[Finding]:
    """Alignment stages run where the alignment runtime does (`Capabilities.alignment_runs`): the
    torch runtime on GPUs and CPUs. The TPU runtime trains pretraining only, so on a TPU cluster the
    stages would run on the hosts' CPUs, a program the plan does not describe.

    passes: an sft stage on h100-sxm      fails: an sft stage on tpu-v5p
    """
    from specc.catalog import load_catalog
    from specc.spec.capabilities import capabilities_for

    accelerator = load_catalog().get(spec.cluster.accelerator)
    if accelerator is None or not spec.alignment or capabilities_for(accelerator).alignment_runs:
        return
    yield Finding(("alignment",),
                  f"alignment stages ({', '.join(stage.name for stage in spec.alignment)}) do not run on "
                  f"{accelerator.id}: specc's alignment runtime is torch on GPUs or CPUs, and its TPU runtime "
                  "trains pretraining only",
                  "run the alignment stages from a second spec on a GPU cluster (model.init_from: the "
                  "pretrained checkpoint, exported with `specc export`)")


def alignment_batch_divides_devices(spec: Spec) -> Iterator[Finding]:
    """An alignment stage's global batch (`batch_size`; PPO's `rollout_batch`) divides over its
    data-parallel ranks: the alignment runtime runs one process per device of the cluster and gives
    each rank an equal slice of every step's examples (`specc.runtime.align.distributed`).

    passes: `batch_size: 32` on 8 devices      fails: `batch_size: 12` on 8 devices
    """
    from specc.spec.derived import total_devices

    devices = total_devices(spec.cluster)
    for index, stage in enumerate(spec.alignment):
        key = "rollout_batch" if stage.type == "ppo" else "batch_size"
        if stage.type == "constitutional" or getattr(stage, key) % devices == 0:
            continue
        batch = getattr(stage, key)
        fitting = [devices * k for k in range(max(1, batch // devices), batch // devices + 2)]
        yield Finding(("alignment", index, key),
                      f"{key} ({batch}) does not divide over the {devices} devices the stage runs on "
                      f"(one process per device, an equal share each): {batch} / {devices} = {batch / devices:g}",
                      f"use a multiple of {devices}, e.g. {' or '.join(str(v) for v in fitting if v > 0)}")
