"""Rules about the data, schedule, cluster, alignment, evaluation and deployment sections."""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import accelerator_ids, closest_ids, load_catalog
from specc.diagnostics.rules.base import Finding
from specc.diagnostics.schema_index import suggest
from specc.spec.derived import total_devices
from specc.spec.root import Spec


def mixture_weights_sum_to_one(spec: Spec) -> Iterator[Finding]:
    """Source weights are proportions; if they do not sum to 1 they are normalised (warning).

    passes: weights 0.7 and 0.3     fails (warning): weights 2 and 1 (normalised to 0.667, 0.333)
    """
    if spec.corpus is None:
        return
    weights = [source.weight for source in spec.corpus.sources]
    total = sum(weights)
    if total <= 0:
        yield Finding(("corpus", "sources"), "all source weights are 0: nothing would be sampled",
                      "give at least one source a positive weight")
    elif abs(total - 1.0) > 1e-6 and len(weights) > 1:
        shares = ", ".join(f"{s.name}={w:.3f}" for s, w in zip(spec.corpus.sources, spec.corpus.normalized_weights().values()))
        yield Finding(("corpus", "sources"), f"source weights sum to {total:g}, not 1; normalised to {shares}",
                      "write weights that sum to 1 to silence this", "warning")
    names = [source.name for source in spec.corpus.sources]
    for index, name in enumerate(names):
        if name in names[:index]:
            yield Finding(("corpus", "sources", index, "name"), f"source name `{name}` is used twice",
                          "source names label documents and mixture reports; make them unique")


def filter_sources_exist(spec: Spec) -> Iterator[Finding]:
    """A filter's `sources:` list names corpus sources.

    passes: `sources: [web]` with a source named web      fails: `sources: [wbe]`
    """
    if spec.corpus is None:
        return
    names = [source.name for source in spec.corpus.sources]
    for index, item in enumerate(spec.filters):
        for position, name in enumerate(item.sources or []):
            if name not in names:
                close = suggest(name, names)
                yield Finding(("filters", index, "sources", position), f"no corpus source is named `{name}`",
                              f"did you mean `{close}`?" if close else f"sources: {', '.join(names)}")


def minhash_bands_rows(spec: Spec) -> Iterator[Finding]:
    """MinHash LSH bands x rows must use exactly num_perm hash values (datasketch's `params`).

    passes: `num_perm: 128, bands: 16, rows: 8`     fails: `num_perm: 128, bands: 20, rows: 5`
    """
    minhash = spec.dedup.minhash
    if minhash is None:
        return
    if (minhash.bands is None) != (minhash.rows is None):
        yield Finding(("dedup", "minhash", "bands" if minhash.bands is not None else "rows"),
                      "bands and rows go together", "set both, or neither to derive them from threshold")
    elif minhash.bands is not None and minhash.bands * minhash.rows != minhash.num_perm:
        fits = [(b, minhash.num_perm // b) for b in range(2, minhash.num_perm) if minhash.num_perm % b == 0][:6]
        yield Finding(("dedup", "minhash", "bands"),
                      f"bands x rows = {minhash.bands} x {minhash.rows} = {minhash.bands * minhash.rows}, but num_perm is {minhash.num_perm}",
                      "use bands x rows in " + ", ".join(f"{b}x{r}" for b, r in fits))


def budget_is_defined(spec: Spec) -> Iterator[Finding]:
    """Exactly one of steps / token_budget, and exactly one of global_batch_size / global_batch_tokens,
    when the spec pretrains (`specc.stage_graph.pretrains`). A fine-tune (model.init_from, no corpus)
    has no pretrain stage: a budget or batch there is ignored, with a warning.

    passes: `steps: 1000, global_batch_size: 32`   fails: `steps: 1000, token_budget: 2T`
    """
    from specc.stage_graph import pretrains

    schedule = spec.schedule
    if not pretrains(spec):
        given = [key for key in ("steps", "token_budget", "global_batch_size", "global_batch_tokens")
                 if getattr(schedule, key) is not None]
        if given:
            yield Finding(("schedule", given[0]), f"schedule.{', schedule.'.join(given)} ignored: the spec has no "
                          "pretrain stage (model.init_from and no corpus: a fine-tune)",
                          "leave them out, or add a corpus for continued pretraining", severity="warning")
        return
    if (schedule.steps is None) == (schedule.token_budget is None):
        both = schedule.steps is not None
        yield Finding(("schedule", "steps") if both else ("schedule",),
                      "set exactly one of schedule.steps and schedule.token_budget" + (" (both are set)" if both else " (neither is set)"),
                      "e.g. `token_budget: 2T` or `steps: 10000`")
    if (schedule.global_batch_size is None) == (schedule.global_batch_tokens is None):
        both = schedule.global_batch_size is not None
        yield Finding(("schedule", "global_batch_size") if both else ("schedule",),
                      "set exactly one of schedule.global_batch_size and schedule.global_batch_tokens" + (" (both are set)" if both else " (neither is set)"),
                      "e.g. `global_batch_tokens: 4M` or `global_batch_size: 1024`")
    elif schedule.global_batch_tokens is not None and schedule.global_batch_tokens % schedule.seq_len:
        sequences = schedule.global_batch_tokens / schedule.seq_len
        yield Finding(("schedule", "global_batch_tokens"),
                      f"global_batch_tokens ({schedule.global_batch_tokens}) is not a whole number of sequences of seq_len {schedule.seq_len} ({sequences:.2f})",
                      f"use {int(sequences) * schedule.seq_len or schedule.seq_len} or {(int(sequences) + 1) * schedule.seq_len}")


def warmup_and_lr_make_sense(spec: Spec) -> Iterator[Finding]:
    """Warmup ends before training does; min_lr does not exceed lr.

    passes: `warmup_steps: 2000, steps: 100000`    fails: `warmup_steps: 2000, steps: 1000`
    """
    schedule = spec.schedule
    steps = schedule.total_steps()
    if steps is not None and schedule.warmup_steps >= steps:
        yield Finding(("schedule", "warmup_steps"),
                      f"warmup_steps ({schedule.warmup_steps}) is not less than the total steps ({steps})",
                      f"use a warmup of about 1% of training, e.g. {max(1, steps // 100)}")
    if schedule.min_lr > schedule.lr:
        yield Finding(("schedule", "min_lr"), f"min_lr ({schedule.min_lr:g}) exceeds lr ({schedule.lr:g})",
                      f"typical min_lr is lr / 10 = {schedule.lr / 10:g}")
    if steps is not None and schedule.checkpoint_interval > steps:
        yield Finding(("schedule", "checkpoint_interval"),
                      f"checkpoint_interval ({schedule.checkpoint_interval}) exceeds the total steps ({steps}): only the final checkpoint is saved",
                      "lower it so an interrupted run loses less", "warning")


def optimizer_values_are_plausible(spec: Spec) -> Iterator[Finding]:
    """AdamW settings inside the schema's bounds can still be far outside practice: a peak lr
    above 1e-2 (published pretraining uses 6e-5 to 6e-4, GPT-3 Table 2.1; 3e-4 for Llama 3 8B),
    or betas with beta1 >= sqrt(beta2), outside the range Adam's convergence analyses assume
    (Reddi et al. 2018, Theorem 4: gamma = beta1 / sqrt(beta2) < 1); usually swapped betas.

    passes: `lr: 3e-4, betas: [0.9, 0.95]`     fails (warning): `lr: 0.1`; `betas: [0.95, 0.9]`
    """
    from specc.diagnostics.rules.stage_rules import ADAMW_LR_CEILING

    schedule = spec.schedule
    if schedule.lr > ADAMW_LR_CEILING:
        yield Finding(("schedule", "lr"), f"lr ({schedule.lr:g}) is far above AdamW pretraining learning rates",
                      "typical: 6e-4 (125M) to 6e-5 (175B) (GPT-3, Table 2.1); 3e-4 (Llama 3 8B); small test models up to 3e-3",
                      "warning")
    beta1, beta2 = schedule.optimizer.betas
    if beta1 ** 2 >= beta2:
        yield Finding(("schedule", "optimizer", "betas"),
                      f"beta1 ({beta1:g}) is not below sqrt(beta2) = {beta2 ** 0.5:.3g}: outside the range Adam's convergence analyses assume",
                      "typical betas: [0.9, 0.95] (GPT-3, Llama) or [0.9, 0.999] (Adam's default)", "warning")


def accelerator_known(spec: Spec) -> Iterator[Finding]:
    """cluster.accelerator and every deploy target's accelerator name a catalog entry.

    passes: `accelerator: h100-sxm`     fails: `accelerator: h100` (hint: `h100-sxm` or `h100-pcie`)
    """
    ids = accelerator_ids()
    checks = [(("cluster", "accelerator"), spec.cluster.accelerator)]
    checks += [(("deploy", "targets", i, "accelerator"), t.accelerator) for i, t in enumerate(spec.deploy.targets)]
    for path, name in checks:
        if name not in ids:
            close = closest_ids(name)
            hint = ("did you mean " + " or ".join(f"`{c}`" for c in close) + "?" if close
                    else f"known: {', '.join(ids)}")
            yield Finding(path, f"unknown accelerator `{name}`", hint + " (`specc catalog` lists them)")


def devices_match_nodes(spec: Spec) -> Iterator[Finding]:
    """When `devices` is given it must equal nodes x devices_per_node.

    passes: `nodes: 8, devices_per_node: 8, devices: 64`   fails: `nodes: 8, devices_per_node: 8, devices: 60`
    """
    cluster = spec.cluster
    if cluster.devices is None or (cluster.devices_per_node is None and cluster.nodes == 1):
        return
    per_node = cluster.devices_per_node
    if per_node is None:
        accelerator = load_catalog().get(cluster.accelerator)
        per_node = accelerator.devices_per_node if accelerator else None
    if per_node is not None and cluster.nodes * per_node != cluster.devices:
        hint = f"set devices: {cluster.nodes * per_node}"
        if cluster.devices % per_node == 0:
            hint += f", or nodes: {cluster.devices // per_node}"
        yield Finding(("cluster", "devices"),
                      f"devices ({cluster.devices}) != nodes x devices_per_node = {cluster.nodes} x {per_node} = {cluster.nodes * per_node}",
                      hint)


def local_runs_on_one_node(spec: Spec) -> Iterator[Finding]:
    """The local executor runs on this machine: one node.

    passes: `executor: local, nodes: 1`     fails: `executor: local, nodes: 4`
    """
    cluster = spec.cluster
    if cluster.executor == "local" and cluster.nodes > 1:
        yield Finding(("cluster", "nodes"), f"the local executor runs on one machine, but nodes is {cluster.nodes}",
                      "use executor: slurm for multi-node runs")


def checkpoints_within_time_limit(spec: Spec) -> Iterator[Finding]:
    """A wall-time checkpoint interval must be shorter than the Slurm time limit minus the
    requeue signal margin, or a job can end without saving.

    passes: `checkpoint_every: 30min` with `time: 4h`    fails: `checkpoint_every: 5h` with `time: 4h`
    """
    every = spec.schedule.checkpoint_every
    slurm = spec.cluster.slurm
    if spec.cluster.executor != "slurm" or every is None:
        return
    limit = slurm.training_time()
    usable = limit - slurm.signal_seconds / 60
    if every >= usable:
        yield Finding(("schedule", "checkpoint_every"),
                      f"checkpoint_every ({every:g} min) is not shorter than the time limit less the signal margin "
                      f"({limit:g} - {slurm.signal_seconds / 60:g} = {usable:g} min)",
                      f"checkpoint at most every {max(1, int(usable // 2))} min")


def alignment_chain_is_valid(spec: Spec) -> Iterator[Finding]:
    """Alignment stages start from a model: `pretrain` (which needs a pretraining run), an
    earlier stage, or a checkpoint path; PPO names a reward_model stage; DPO's reference
    is `init` or an earlier stage; stage names are unique and are not the bundle's own
    stage names (data, tokenize, pretrain, pretrain_tpu, eval, deploy: the emitter refuses those).

    passes: sft(init_from: pretrain) -> dpo(init_from: sft)   fails: dpo(init_from: sftt); an sft stage named `eval`
    """
    from specc.pipeline import PIPELINE_STAGE_NAMES

    earlier: dict[str, str] = {}
    for index, stage in enumerate(spec.alignment):
        where = ("alignment", index)
        if stage.name in earlier:
            yield Finding(where + ("name",), f"stage name `{stage.name}` is used twice", "stage names must be unique")
        elif stage.name in PIPELINE_STAGE_NAMES:
            yield Finding(where + ("name",), f"stage name `{stage.name}` is taken by the pipeline's own `{stage.name}` stage",
                          f"choose another name, e.g. `{stage.type}`" if stage.type not in PIPELINE_STAGE_NAMES
                          else "choose another name")
        source = stage.init_from
        looks_like_path = "/" in source or source.endswith((".pt", ".safetensors"))
        if source != "pretrain" and source not in earlier and not looks_like_path:
            close = suggest(source, ["pretrain", *earlier])
            yield Finding(where + ("init_from",), f"`{source}` is not `pretrain`, an earlier stage, or a checkpoint path",
                          f"did you mean `{close}`?" if close else f"earlier stages: {', '.join(earlier) or 'none'}")
        if stage.type == "ppo":
            if earlier.get(stage.reward_model) != "reward_model":
                rms = [n for n, kind in earlier.items() if kind == "reward_model"]
                yield Finding(where + ("reward_model",), f"`{stage.reward_model}` is not an earlier reward_model stage",
                              f"reward_model stages before it: {', '.join(rms) or 'none; add one before ppo'}")
        if stage.type == "dpo" and stage.reference != "init" and stage.reference not in earlier:
            yield Finding(where + ("reference",), f"DPO reference `{stage.reference}` is not `init` or an earlier stage",
                          f"earlier stages: {', '.join(earlier) or 'none'}")
        earlier[stage.name] = stage.type


def quantization_fits_accelerator(spec: Spec) -> Iterator[Finding]:
    """Deployment quantization must run on the serving accelerator: nf4 kernels are CUDA-only
    (not TPU or CPU); an fp8 KV cache needs fp8 support. (Quantizations the deploy stage does
    not implement are R172's.)

    passes: `quantization: nf4, accelerator: a100-80gb`    fails: `quantization: nf4, accelerator: tpu-v5e`
    """
    catalog = load_catalog()
    for index, target in enumerate(spec.deploy.targets):
        accelerator = catalog.get(target.accelerator)
        if accelerator is None:
            continue
        q = target.quantization
        if q == "nf4" and accelerator.kind != "gpu":
            yield Finding(("deploy", "targets", index, "quantization"),
                          f"{q} kernels need a GPU; {accelerator.name} is a {accelerator.kind.upper()}",
                          "use int8 (weight-only) on TPU/CPU")
        if target.kv_cache_dtype == "fp8" and not accelerator.fp8:
            yield Finding(("deploy", "targets", index, "kv_cache_dtype"), f"{accelerator.name} has no fp8 support",
                          "use kv_cache_dtype: bf16 or int8")


def draft_model_matches_target(spec: Spec) -> Iterator[Finding]:
    """A speculative draft model must share the target's vocabulary and be smaller.

    passes: draft with the same vocab_size and fewer layers    fails: draft vocab 32000 for a 128256-vocab target
    """
    for index, target in enumerate(spec.deploy.targets):
        if target.speculative is None or isinstance(target.speculative.draft, str):
            continue
        draft = target.speculative.draft
        where = ("deploy", "targets", index, "speculative", "draft")
        if draft.vocab_size != spec.model.vocab_size:
            yield Finding(where + ("vocab_size",),
                          f"draft vocab_size ({draft.vocab_size}) differs from the target's ({spec.model.vocab_size}); proposals could not be verified",
                          f"set it to {spec.model.vocab_size}")
        if draft.num_layers * draft.hidden_size**2 >= spec.model.num_layers * spec.model.hidden_size**2:
            yield Finding(where, "the draft model is not smaller than the target; speculative decoding would slow decoding down",
                          "use a draft with fewer layers or a smaller hidden size", "warning")


def eval_names_unique(spec: Spec) -> Iterator[Finding]:
    """Evaluation task and perplexity-set names label result tables and must be unique.

    passes: tasks `hellaswag`, `gsm8k`     fails: two tasks named `mmlu`
    """
    seen: set[str] = set()
    entries = [(("eval", "perplexity", i, "name"), p.name) for i, p in enumerate(spec.eval.perplexity)]
    entries += [(("eval", "tasks", i, "name"), t.name) for i, t in enumerate(spec.eval.tasks)]
    if spec.eval.lm_eval is not None:
        entries += [(("eval", "lm_eval", "tasks", i), name) for i, name in enumerate(spec.eval.lm_eval.tasks)]
    for path, name in entries:
        if name in seen:
            yield Finding(path, f"evaluation name `{name}` is used twice", "rename one of them")
        seen.add(name)
    for index, task in enumerate(spec.eval.tasks):
        if task.answer_pattern and task.type == "multiple_choice":
            yield Finding(("eval", "tasks", index, "answer_pattern"),
                          "answer_pattern applies to generative tasks only and is ignored here", severity="warning")
