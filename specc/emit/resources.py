"""What each stage asks Slurm for: nodes, devices, CPUs, memory, partition, time limit.

Defaults come from the plan and `cluster.slurm`; `cluster.slurm.stages.<name>` overrides them
per stage. Training spans the cluster on whole nodes; data and tokenize use no accelerator, so
they go to `cluster.slurm.cpu_partition` with one CPU per data worker; alignment stages span
the cluster like training (one process per device, `specc.runtime.align.distributed`); eval and
deploy run one process on one device. Validate (R240-R245,
`specc.diagnostics.rules.resource_rules`) refuses nodes or devices a stage's runtime would not use,
so what is emitted is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.pipeline import STAGE_KINDS
from specc.spec.cluster import StageResourcesSpec
from specc.spec.root import Spec
from specc.spec.units import format_minutes_for_slurm

CPU_STAGES = tuple(kind.name for kind in STAGE_KINDS if not kind.uses_devices)
"""Stages that use no accelerator (data, tokenize: filters, signatures, BPE training, encoding)."""
CLUSTER_STAGES = tuple(kind.name for kind in STAGE_KINDS if kind.spans_cluster)
"""Stages that span every node of the cluster (training), read from the stage registry."""


@dataclass(frozen=True)
class StageResources:
    """The scheduler request of one stage, after defaults."""

    nodes: int
    gpus_per_node: int | None
    cpus_per_task: int | None
    mem: str | None
    partition: str | None
    time_minutes: float
    exclusive: bool

    def directives(self) -> dict[str, str | bool]:
        """The `#SBATCH` options these resources set (the caller adds the rest)."""
        found: dict[str, str | bool] = {"nodes": str(self.nodes), "time": format_minutes_for_slurm(self.time_minutes)}
        optional = {"partition": self.partition, "mem": self.mem,
                    "cpus-per-task": str(self.cpus_per_task) if self.cpus_per_task else None,
                    "gpus-per-node": str(self.gpus_per_node) if self.gpus_per_node else None}
        found.update({key: value for key, value in optional.items() if value is not None})
        if self.exclusive:
            found["exclusive"] = True
        return found


def declared(spec: Spec, stage: str) -> StageResourcesSpec:
    """The spec's `cluster.slurm.stages.<stage>` (empty when not given)."""
    return spec.cluster.slurm.stages.get(stage) or StageResourcesSpec()


def data_workers(spec: Spec) -> int:
    """Worker processes of the data stage (its signature pool)."""
    return spec.dedup.num_workers if spec.dedup is not None else 1


def stage_resources(spec: Spec, stage: str, *, nodes: int, gpus_per_node: int | None,
                    spans_cluster: bool | None = None) -> StageResources:
    """The resources of `stage` given its planned `nodes` and `gpus_per_node` (from the plan's
    device count for training and alignment, one device for the other device stages);
    `spans_cluster`: the stage's kind does (default: looked up by the stage's name)."""
    slurm = spec.cluster.slurm
    own = declared(spec, stage)
    cpu_stage = stage in CPU_STAGES
    cpus = own.cpus_per_task or slurm.cpus_per_task
    if own.cpus_per_task is None and stage == "data" and data_workers(spec) > (cpus or 1):
        cpus = data_workers(spec)
    partition = own.partition or ((slurm.cpu_partition or slurm.partition) if cpu_stage else slurm.partition)
    exclusive = own.exclusive if own.exclusive is not None else (slurm.exclusive and (
        spans_cluster if spans_cluster is not None else stage in CLUSTER_STAGES))
    return StageResources(nodes=own.nodes or nodes, gpus_per_node=gpus_per_node, cpus_per_task=cpus,
                          mem=own.mem or slurm.mem, partition=partition, time_minutes=own.time or slurm.time,
                          exclusive=exclusive)
