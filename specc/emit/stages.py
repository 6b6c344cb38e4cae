"""Which stages a spec runs, with what config and resources, and their Slurm directives.

The stages come from the registry (`specc.pipeline`): each kind builds its own config from the
spec (torchtitan's lesson: each stage takes only its own settings), so the stage owns its
config format and the emitter only places it in `config.json`. A stage whose spec section is
absent (no `corpus`: no data stages) is left out of the bundle.

The Slurm directives are computed here once and used twice, for the bundle's
`job.sbatch` and for the submitit executor, so what the bundle shows is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from specc.catalog import load_catalog
from specc.emit.resources import stage_resources
from specc.pipeline import PIPELINE_STAGE_NAMES, StageKind, output_dirname, planned_stages
from specc.spec.derived import devices_per_node, total_devices
from specc.spec.root import Spec

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
    kind: StageKind
    config: dict
    """What the kind's config builder made: `config.json["params"]`."""
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

    def config_file(self, run_dir: str) -> dict:
        """The stage's config.json (the runtime contract: stage, run_dir, params; tracking when on)."""
        config = {"stage": self.name, "run_dir": run_dir, "params": self.config}
        if self.tracking is not None:
            config["tracking"] = self.tracking
        return config


def run_dir_for(spec: Spec) -> str:
    """The run directory, relative to the bundle directory (bundles are relocatable with their out dir)."""
    return f"../{RUN_DIR_NAME}/{spec.name}"


def build_stages(spec: Spec, plan: dict, spec_dir: str) -> list[Stage]:
    """The stages this spec runs, numbered in pipeline order, with config and resources."""
    planned = planned_stages(spec, plan, spec_dir)
    names = [name for _, name, _ in planned]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise EmitError(f"two stages are named {duplicate!r}: an alignment stage may not reuse a pipeline "
                        f"stage's name ({', '.join(PIPELINE_STAGE_NAMES)})")
    stages = [_resources(Stage(index, name, kind, config), spec, plan)
              for index, (kind, name, config) in enumerate(planned, start=1)]
    return [replace(stage, tracking=tracking_config(spec, stage.name)) for stage in stages]


UNTRACKED_STAGES = ("data", "tokenize", "deploy")
"""Stages without training curves or scores: their metrics stay in metrics.jsonl (and `specc report`)."""


def tracking_config(spec: Spec, stage: str) -> dict | None:
    """The `tracking` block of a training, alignment or eval stage's config, from `spec.tracking`."""
    if not spec.tracking.tensorboard or stage in UNTRACKED_STAGES:
        return None
    return {"tensorboard": True, "run_name": spec.tracking.run_name or spec.name,
            "log_dir": f"tensorboard/{output_dirname(stage)}", "stage_dir": output_dirname(stage)}


def _resources(stage: Stage, spec: Spec, plan: dict) -> Stage:
    """Nodes and processes of a stage: a kind that spans the cluster runs on every node, one
    process per device (torchrun) or per host (TPU SPMD); the others run as one process on one
    node (data and tokenize use worker processes inside it), with one GPU if they use devices."""
    accelerator = load_catalog().get(spec.cluster.accelerator)
    is_gpu = accelerator is not None and accelerator.kind == "gpu"
    kind = stage.kind
    if kind.spans_cluster and kind.process_per_device:
        nodes = spec.cluster.nodes
        count = int(plan.get("hardware", {}).get("count") or total_devices(spec.cluster))
        per_node = max(1, count // nodes) if count >= nodes else devices_per_node(spec.cluster)
        stage = replace(stage, nodes=nodes, procs_per_node=per_node, gpus_per_node=per_node if is_gpu else None)
    elif kind.spans_cluster:
        stage = replace(stage, nodes=spec.cluster.nodes)
    else:
        stage = replace(stage, gpus_per_node=1 if is_gpu and kind.uses_devices else None)
    return replace(stage, directives=slurm_directives(stage, spec))


def slurm_directives(stage: Stage, spec: Spec) -> dict[str, str | bool]:
    """`#SBATCH` options of a stage, by long option name (values are quoted when rendered)."""
    slurm = spec.cluster.slurm
    directives: dict[str, str | bool] = {
        "job-name": f"{spec.name}-{stage.name}",
        "ntasks-per-node": "1",
        "signal": f"USR2@{slurm.signal_seconds}",
    }
    directives.update(stage_resources(spec, stage.name, nodes=stage.nodes, gpus_per_node=stage.gpus_per_node,
                                      spans_cluster=stage.kind.spans_cluster)
                      .directives())
    optional = {"account": slurm.account, "qos": slurm.qos, "constraint": slurm.constraint,
                "mail-user": slurm.mail_user, "mail-type": ",".join(slurm.mail_type) if slurm.mail_type else None}
    directives.update({key: value for key, value in optional.items() if value is not None})
    if spec.cluster.container:  # pyxis takes its options as sbatch options too (pyxis >= 0.12)
        directives["container-image"] = spec.cluster.container
        if spec.cluster.container_mounts:
            directives["container-mounts"] = ",".join(spec.cluster.container_mounts)
    directives["requeue" if slurm.requeue else "no-requeue"] = True
    return dict(sorted(directives.items()))
