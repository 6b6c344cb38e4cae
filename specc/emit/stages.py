"""Which stages a spec runs, with what params and resources, and their Slurm directives.

Each stage takes only its own settings (torchtitan's lesson): the emitter asks the
stage's torch-free `params` module to build them from the spec, so the stage owns its
config format and the emitter only places it in `config.json`. A stage whose spec
section is absent (no `corpus`: no data stages) is left out of the bundle.

The Slurm directives are computed here once and used twice, for the bundle's
`job.sbatch` and for the submitit executor, so what the bundle shows is what runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

from specc.catalog import load_catalog
from specc.spec.derived import devices_per_node, total_devices
from specc.spec.root import Spec
from specc.spec.units import format_minutes_for_slurm

RUN_DIR_NAME = "runs"
"""Stage outputs go to `<out>/runs/<name>/`, beside the bundles and shared by all bundles of
one run name, so a relaunch with changed training settings finds the finished data stages."""


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

    def config(self, run_dir: str) -> dict:
        """The stage's config.json (the runtime contract: stage, run_dir, params)."""
        return {"stage": self.name, "run_dir": run_dir, "params": self.params}


def run_dir_for(spec: Spec) -> str:
    """The run directory, relative to the bundle directory (bundles are relocatable with their out dir)."""
    return f"../{RUN_DIR_NAME}/{spec.name}"


# --- params from each stage's own module -------------------------------------------------


def _data_params(spec: Spec, plan: dict, spec_dir: str) -> dict:
    from specc.runtime.data.params import data_params

    return data_params(spec, spec_dir)


def _tokenize_params(spec: Spec, plan: dict, spec_dir: str) -> dict:
    from specc.runtime.data.params import tokenize_params

    return tokenize_params(spec, spec_dir)


def _pretrain_params(spec: Spec, plan: dict, spec_dir: str) -> dict:
    from specc.runtime.train.params import pretrain_params

    predicted = {**plan.get("time", {}), "peak_memory_gib": plan.get("memory", {}).get("per_device_gib"),
                 "flops_per_token": plan.get("model", {}).get("flops_per_token"),
                 "peak_tflops": plan.get("hardware", {}).get("peak_tflops")}
    return pretrain_params(spec, plan["layout"], predicted)


StageBuilder = Callable[[Spec, dict, str], dict]

PIPELINE: tuple[tuple[str, str, StageBuilder], ...] = (
    ("data", "specc.runtime.data.params", _data_params),
    ("tokenize", "specc.runtime.data.params", _tokenize_params),
    ("pretrain", "specc.runtime.train.params", _pretrain_params),
)
"""Stages in pipeline order: (name, the torch-free module building its params, builder)."""


def _wanted(name: str, spec: Spec) -> bool:
    if name in ("data", "tokenize"):
        return spec.corpus is not None
    return True


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_stages(spec: Spec, plan: dict, spec_dir: str) -> list[Stage]:
    """The stages this spec runs, numbered in pipeline order, with params and resources."""
    stages = []
    for name, module, builder in PIPELINE:
        if not _wanted(name, spec) or not _installed(module):
            continue
        stage = _resources(len(stages) + 1, name, builder(spec, plan, spec_dir), spec, plan)
        stages.append(stage)
    return stages


def _resources(index: int, name: str, params: dict, spec: Spec, plan: dict) -> Stage:
    """Nodes and processes of a stage; only training spans the devices."""
    if name != "pretrain":  # data and tokenize parallelise inside one job (worker processes)
        stage = Stage(index, name, params)
    else:
        nodes = spec.cluster.nodes
        count = int(plan.get("hardware", {}).get("count") or total_devices(spec.cluster))
        per_node = max(1, count // nodes) if count >= nodes else devices_per_node(spec.cluster)
        accelerator = load_catalog().get(spec.cluster.accelerator)
        gpus = per_node if accelerator is not None and accelerator.kind == "gpu" else None
        stage = Stage(index, name, params, nodes=nodes, procs_per_node=per_node, gpus_per_node=gpus)
    return Stage(stage.index, stage.name, stage.params, stage.nodes, stage.procs_per_node,
                 stage.gpus_per_node, slurm_directives(stage, spec))


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
    if slurm.exclusive and stage.name == "pretrain":
        directives["exclusive"] = True
    directives["requeue" if slurm.requeue else "no-requeue"] = True
    return dict(sorted(directives.items()))
