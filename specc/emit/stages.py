"""Which stages a spec runs, with what params and resources, and their Slurm directives.

Each stage takes only its own settings (torchtitan's lesson): the emitter asks the
stage's torch-free `params` module to build them from the spec, so the stage owns its
config format and the emitter only places it in `config.json`. A stage whose spec
section is absent (no `corpus`: no data stages) is left out of the bundle.

The Slurm directives are computed here once and used twice, for the bundle's
`job.sbatch` and for the submitit executor, so what the bundle shows is what runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace

from specc.catalog import load_catalog
from specc.spec.derived import devices_per_node, total_devices
from specc.spec.root import Spec
from specc.spec.units import format_minutes_for_slurm

RUN_DIR_NAME = "runs"
"""Stage outputs go to `<out>/runs/<name>/`, beside the bundles and shared by all bundles of
one run name, so a relaunch with changed training settings finds the finished data stages."""


class EmitError(Exception):
    """The bundle cannot be written as asked (it exists and differs, a stage name clashes, ...)."""


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline as the bundle runs it."""

    index: int
    name: str
    params: dict
    nodes: int = 1
    procs_per_node: int = 1
    """Processes per node that `run.sh` starts (torchrun workers for multi-device training)."""
    gpus_per_node: int | None = None
    directives: dict = field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.index:02d}-{self.name}"

    tracking: dict | None = None
    """Experiment tracking for this stage (`specc.runtime.tracking`), None when it tracks nothing."""

    def config(self, run_dir: str) -> dict:
        """The stage's config.json (the runtime contract: stage, run_dir, params; tracking when on)."""
        config = {"stage": self.name, "run_dir": run_dir, "params": self.params}
        if self.tracking is not None:
            config["tracking"] = self.tracking
        return config


def run_dir_for(spec: Spec) -> str:
    """The run directory, relative to the bundle directory (bundles are relocatable with their out dir)."""
    return f"../{RUN_DIR_NAME}/{spec.name}"


# --- params from each stage's own module -------------------------------------------------


def _predicted(plan: dict) -> dict:
    """The plan's predictions the trainer logs beside its measurements."""
    return {**plan.get("time", {}), "peak_memory_gib": plan.get("memory", {}).get("per_device_gib"),
            "flops_per_token": plan.get("model", {}).get("flops_per_token"),
            "peak_tflops": plan.get("hardware", {}).get("peak_tflops")}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _is_tpu(spec: Spec) -> bool:
    accelerator = load_catalog().get(spec.cluster.accelerator)
    return accelerator is not None and accelerator.kind == "tpu"


def stage_params(spec: Spec, plan: dict, spec_dir: str) -> list[tuple[str, dict]]:
    """(stage name, params) in pipeline order: data -> tokenize -> pretrain -> alignment stages
    (named by the spec) -> eval -> deploy. Sections the spec leaves out are skipped, and so is a
    stage whose runtime is not part of this installation."""
    stages: list[tuple[str, dict]] = []
    if spec.corpus is not None and _installed("specc.runtime.data.params"):
        from specc.runtime.data.params import data_params, tokenize_params

        stages += [("data", data_params(spec, spec_dir)), ("tokenize", tokenize_params(spec, spec_dir))]
    if _installed("specc.runtime.train.params"):
        from specc.runtime.train.params import pretrain_params

        name = "pretrain_tpu" if _is_tpu(spec) else "pretrain"
        stages.append((name, pretrain_params(spec, plan["layout"], _predicted(plan))))
    if spec.alignment and _installed("specc.runtime.align.params"):
        from specc.runtime.align.params import alignment_params

        stages += alignment_params(spec, spec_dir)
    if _installed("specc.runtime.evaluate.params"):
        from specc.runtime.evaluate.params import eval_params, wanted

        if wanted(spec):
            stages.append(("eval", eval_params(spec, spec_dir)))
    if spec.deploy.targets and _installed("specc.runtime.deploy.stage"):
        from specc.runtime.align.params import deploy_params

        stages.append(("deploy", deploy_params(spec, spec_dir)))
    return stages


def build_stages(spec: Spec, plan: dict, spec_dir: str) -> list[Stage]:
    """The stages this spec runs, numbered in pipeline order, with params and resources."""
    named = stage_params(spec, plan, spec_dir)
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise EmitError(f"two stages are named {duplicate!r}: an alignment stage may not reuse a pipeline "
                        f"stage's name (data, tokenize, pretrain, eval, deploy)")
    stages = [_resources(index, name, params, spec, plan) for index, (name, params) in enumerate(named, start=1)]
    return [replace(stage, tracking=tracking_params(spec, stage.name)) for stage in stages]


UNTRACKED_STAGES = ("data", "tokenize", "deploy")
"""Stages without training curves or scores: their metrics stay in metrics.jsonl (and `specc report`)."""


def tracking_params(spec: Spec, stage: str) -> dict | None:
    """The `tracking` block of a training, alignment or eval stage's config, from `spec.tracking`."""
    if not spec.tracking.tensorboard or stage in UNTRACKED_STAGES:
        return None
    return {"tensorboard": True, "run_name": spec.tracking.run_name or spec.name,
            "log_dir": f"tensorboard/{output_dirname(stage)}", "stage_dir": output_dirname(stage)}


def output_dirname(stage: str) -> str:
    """Where a stage writes under the run directory: its name (the TPU trainer writes `pretrain/`)."""
    return "pretrain" if stage == "pretrain_tpu" else stage


def _resources(index: int, name: str, params: dict, spec: Spec, plan: dict) -> Stage:
    """Nodes and processes of a stage: training spans every device (on TPU one process per host);
    the other stages run as one process (data and tokenize use worker processes inside it)."""
    accelerator = load_catalog().get(spec.cluster.accelerator)
    is_gpu = accelerator is not None and accelerator.kind == "gpu"
    if name == "pretrain":
        nodes = spec.cluster.nodes
        count = int(plan.get("hardware", {}).get("count") or total_devices(spec.cluster))
        per_node = max(1, count // nodes) if count >= nodes else devices_per_node(spec.cluster)
        stage = Stage(index, name, params, nodes=nodes, procs_per_node=per_node,
                      gpus_per_node=per_node if is_gpu else None)
    elif name == "pretrain_tpu":
        stage = Stage(index, name, params, nodes=spec.cluster.nodes)
    else:
        uses_device = name not in ("data", "tokenize")
        stage = Stage(index, name, params, gpus_per_node=1 if is_gpu and uses_device else None)
    return replace(stage, directives=slurm_directives(stage, spec))


def slurm_directives(stage: Stage, spec: Spec) -> dict[str, str | bool]:
    """`#SBATCH` options of a stage, by long option name (values are quoted when rendered)."""
    slurm = spec.cluster.slurm
    directives: dict[str, str | bool] = {
        "job-name": f"{spec.name}-{stage.name}",
        "nodes": str(stage.nodes),
        "ntasks-per-node": "1",
        "time": format_minutes_for_slurm(slurm.time),
        "signal": f"USR2@{slurm.signal_seconds}",
    }
    optional = {"partition": slurm.partition, "account": slurm.account, "qos": slurm.qos,
                "constraint": slurm.constraint, "mail-user": slurm.mail_user, "mem": slurm.mem,
                "cpus-per-task": str(slurm.cpus_per_task) if slurm.cpus_per_task else None,
                "gpus-per-node": str(stage.gpus_per_node) if stage.gpus_per_node else None,
                "mail-type": ",".join(slurm.mail_type) if slurm.mail_type else None}
    directives.update({key: value for key, value in optional.items() if value is not None})
    if spec.cluster.container:  # pyxis takes its options as sbatch options too (pyxis >= 0.12)
        directives["container-image"] = spec.cluster.container
        if spec.cluster.container_mounts:
            directives["container-mounts"] = ",".join(spec.cluster.container_mounts)
    if slurm.exclusive and stage.name in ("pretrain", "pretrain_tpu"):
        directives["exclusive"] = True
    directives["requeue" if slurm.requeue else "no-requeue"] = True
    return dict(sorted(directives.items()))
