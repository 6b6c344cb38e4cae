"""The stage registry: every stage kind of the pipeline, declared once, in pipeline order.

data -> tokenize -> pretrain (pretrain_tpu on TPU) -> alignment stages -> eval -> deploy.
Which of them a spec runs, and which model each starts from, is `specc.stage_graph`'s to say
(a fine-tune, `model.init_from` without a corpus, has no data, tokenize or pretrain stage).

Each kind says what the phases need to know about it, so that none of them keeps its own list:
the emitter (`specc.emit.stages`) builds each stage's config with `build_configs` and its
resources from `uses_devices` / `spans_cluster`; the launcher and `specc status` find a stage's
outputs with `output_dirname`; the runtime (`python -m specc.runtime`) imports `module` and
skips a stage that already finished (`specc.runtime.stages`). Adding a stage kind is one entry
here (plus its config builder under `specc.emit.configs` and its runtime module).

Torch-free and cheap: the config builders are imported when a bundle is built, not when this is
imported (validate reads the stage names for rule R150), and no runtime module is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from specc.spec.root import Spec
from specc.stage_graph import eval_wanted, is_tpu, prepares_data, pretrains

ConfigBuilder = Callable[[Spec, dict, str], list[tuple[str, dict]]]
"""(spec, plan, spec directory) -> (stage name, config) for each stage of the kind the spec runs."""


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: what each phase needs to know about it."""

    name: str
    """The stage's name in the bundle (`stages/NN-<name>/`, `config.json["stage"]`); alignment
    stages are named by the spec instead."""
    module: str
    """Runtime entry point: the module whose `run(config)` executes the stage."""
    build_configs: ConfigBuilder
    """The stages of this kind the spec runs, each with its config (`config.json["params"]`)."""
    output_dir: str | None = None
    """Directory under the run directory the stage writes; None: the stage's own name."""
    reads: tuple[str, ...] = ()
    """Kinds whose outputs it reads (all of them earlier in the pipeline)."""
    uses_devices: bool = False
    """Needs an accelerator (a GPU per process on GPU clusters)."""
    spans_cluster: bool = False
    """Runs on every node of the cluster (training), not as one process on one node."""
    process_per_device: bool = False
    """With `spans_cluster`: one process per device (torchrun), else one per host (TPU SPMD)."""

    def installed(self) -> bool:
        """Whether this installation has the stage's runtime (a bundle leaves out stages it lacks)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


# --- which stages of each kind a spec runs -------------------------------------------------


def _predicted(plan: dict) -> dict:
    """The plan's predictions the trainer logs beside its measurements."""
    return {**plan.get("time", {}), "peak_memory_gib": plan.get("memory", {}).get("per_device_gib"),
            "flops_per_token": plan.get("model", {}).get("flops_per_token"),
            "peak_tflops": plan.get("hardware", {}).get("peak_tflops")}


def _data(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.data import build_data_config

    return [("data", build_data_config(spec, spec_dir))] if prepares_data(spec) else []


def _tokenize(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.data import build_tokenize_config

    return [("tokenize", build_tokenize_config(spec, spec_dir))] if prepares_data(spec) else []


def _pretrain(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.pretrain import build_pretrain_config

    if is_tpu(spec) or not pretrains(spec):
        return []
    return [("pretrain", build_pretrain_config(spec, plan["layout"], _predicted(plan)))]


def _pretrain_tpu(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.pretrain import build_pretrain_config

    if not is_tpu(spec) or not pretrains(spec):
        return []
    return [("pretrain_tpu", build_pretrain_config(spec, plan["layout"], _predicted(plan)))]


def _alignment(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.alignment import build_alignment_configs

    return build_alignment_configs(spec, spec_dir, plan) if spec.alignment else []


def _eval(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.evaluate import build_eval_config

    return [("eval", build_eval_config(spec, spec_dir))] if eval_wanted(spec) else []


def _deploy(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    from specc.emit.configs.alignment import build_deploy_config

    return [("deploy", build_deploy_config(spec, spec_dir))] if spec.deploy.targets else []


ALIGNMENT = "alignment"
"""The kind of the spec's alignment stages (`sft`, `dpo-round2`, ...: each named by the spec)."""

STAGE_KINDS: tuple[StageKind, ...] = (
    StageKind("data", "specc.runtime.data.stage", _data),
    StageKind("tokenize", "specc.runtime.tokenizer.stage", _tokenize, reads=("data",)),
    StageKind("pretrain", "specc.runtime.train.stage", _pretrain, reads=("tokenize",),
              uses_devices=True, spans_cluster=True, process_per_device=True),
    StageKind("pretrain_tpu", "specc.runtime.tpu.stage", _pretrain_tpu, output_dir="pretrain",
              reads=("tokenize",), uses_devices=True, spans_cluster=True),
    StageKind(ALIGNMENT, "specc.runtime.align.stage", _alignment, reads=("tokenize", "pretrain", ALIGNMENT),
              uses_devices=True, spans_cluster=True, process_per_device=True),
    StageKind("eval", "specc.runtime.evaluate.stage", _eval, reads=("tokenize", "pretrain", ALIGNMENT),
              uses_devices=True),
    StageKind("deploy", "specc.runtime.deploy.stage", _deploy, reads=("tokenize", "pretrain", ALIGNMENT),
              uses_devices=True),
)
"""In pipeline order: the order stages are numbered, launched and run in."""

KINDS_BY_NAME = {kind.name: kind for kind in STAGE_KINDS}
PIPELINE_STAGE_NAMES = tuple(kind.name for kind in STAGE_KINDS if kind.name != ALIGNMENT)
"""The names the pipeline's own stages take; an alignment stage may not reuse one."""


def planned_stages(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[StageKind, str, dict]]:
    """(kind, stage name, config) of every stage the spec runs, in pipeline order. Sections the
    spec leaves out are skipped, and so is a stage whose runtime is not part of this installation."""
    return [(kind, name, config) for kind in STAGE_KINDS if kind.installed()
            for name, config in kind.build_configs(spec, plan, spec_dir)]


def kind_of(config: dict) -> StageKind:
    """The kind of a stage config (`config.json`): by name, or alignment for an alignment stage
    (its `params.stage` is an alignment-stage object with the config's name and a `type`)."""
    name = config.get("stage", "")
    if name in KINDS_BY_NAME and name != ALIGNMENT:
        return KINDS_BY_NAME[name]
    stage = (config.get("params") or {}).get("stage")
    if isinstance(stage, dict) and stage.get("name") == name and "type" in stage:
        return KINDS_BY_NAME[ALIGNMENT]
    raise KeyError(f"unknown stage {name!r}; known: {', '.join(PIPELINE_STAGE_NAMES)} or an alignment stage")


def output_dirname(stage: str) -> str:
    """Where stage `stage` writes under the run directory: its kind's `output_dir`, else its name
    (an alignment stage writes under its own name)."""
    kind = KINDS_BY_NAME.get(stage)
    return (kind.output_dir if kind is not None else None) or stage
