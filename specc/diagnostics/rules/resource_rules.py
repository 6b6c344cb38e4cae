"""Rules about per-stage resources (`cluster.slurm.stages`, `specc.emit.resources`): a stage may
ask only for the nodes and devices its runtime uses, by a name the pipeline has."""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import load_catalog
from specc.diagnostics.rules.base import Finding
from specc.diagnostics.schema_index import suggest
from specc.emit.resources import CPU_STAGES
from specc.spec.derived import total_devices
from specc.spec.root import Spec
from specc.stage_graph import stage_names as _stage_names
from specc.stage_graph import training_stage as _training_name


def _planned(spec: Spec, stage: str) -> tuple[int, int]:
    """(nodes, devices per node) that the stage's runtime uses: training and alignment span the
    cluster (one process per device, `specc.runtime.align.distributed`), eval and deploy one device."""
    if stage == _training_name(spec) or stage in {s.name for s in spec.alignment}:
        nodes = spec.cluster.nodes
        return nodes, max(1, total_devices(spec.cluster) // nodes)
    if stage in CPU_STAGES:
        return 1, 0
    return 1, 1


def stage_resources_name_stages(spec: Spec) -> Iterator[Finding]:
    """Each key of `cluster.slurm.stages` names a stage this spec runs.

    passes: `stages: {data: {cpus_per_task: 32}}` with a corpus    fails: `stages: {pretrian: {time: 2h}}`
    """
    names = _stage_names(spec)
    for name in spec.cluster.slurm.stages:
        if name not in names:
            close = suggest(name, names)
            yield Finding(("cluster", "slurm", "stages", name), f"no stage named {name!r} in this pipeline "
                          f"(its stages: {', '.join(names)})", f"did you mean {close!r}?" if close else None)


def stage_nodes_are_used(spec: Spec) -> Iterator[Finding]:
    """A stage's nodes are those its runtime spans: training the whole cluster (`cluster.nodes`),
    every other stage one node (data shards go to `data_array_tasks`, a job array).

    passes: `stages: {pretrain: {nodes: 2}}` with `nodes: 2`    fails: `stages: {sft: {nodes: 4}}`
    """
    names = _stage_names(spec)
    for name, own in spec.cluster.slurm.stages.items():
        if name not in names or own.nodes is None:
            continue
        nodes, _ = _planned(spec, name)
        if own.nodes != nodes:
            why = ("training and alignment span cluster.nodes" if nodes > 1 or name == _training_name(spec) else
                   "its runtime is one process on one node")
            yield Finding(("cluster", "slurm", "stages", name, "nodes"),
                          f"stage {name!r} runs on {nodes} node(s) ({why}), not {own.nodes}",
                          f"set nodes: {nodes} or leave it out" + (
                              "; spread the data stage with cluster.slurm.data_array_tasks" if name == "data" else ""))


def stage_devices_are_used(spec: Spec) -> Iterator[Finding]:
    """A stage's devices per node are those its runtime uses: training the plan's devices per node,
    alignment too (one process per device), eval/deploy one, data and tokenize none.

    passes: `stages: {data: {devices_per_node: 0}}`    fails: `stages: {eval: {devices_per_node: 8}}`
    """
    names = _stage_names(spec)
    for name, own in spec.cluster.slurm.stages.items():
        if name not in names or own.devices_per_node is None:
            continue
        _, devices = _planned(spec, name)
        if own.devices_per_node != devices:
            yield Finding(("cluster", "slurm", "stages", name, "devices_per_node"),
                          f"stage {name!r} uses {devices} device(s) per node, not {own.devices_per_node}",
                          f"set devices_per_node: {devices} or leave it out")


def data_cpus_cover_workers(spec: Spec) -> Iterator[Finding]:
    """The data stage's CPUs cover its signature workers (`dedup.num_workers`), or the workers
    share fewer cores than there are of them (warning).

    passes: `num_workers: 16` with `cpus_per_task: 16`    fails (warning): `num_workers: 64` with `cpus_per_task: 8`
    """
    own = spec.cluster.slurm.stages.get("data")
    if own is None or own.cpus_per_task is None or spec.dedup is None:
        return
    workers = spec.dedup.num_workers
    if own.cpus_per_task < workers:
        yield Finding(("cluster", "slurm", "stages", "data", "cpus_per_task"),
                      f"the data stage runs {workers} workers (dedup.num_workers) on {own.cpus_per_task} CPUs",
                      f"set cpus_per_task: {workers} or lower dedup.num_workers", "warning")


def stage_time_exceeds_signal(spec: Spec) -> Iterator[Finding]:
    """A stage's time limit is longer than the requeue signal's margin (`signal_seconds`), or the
    job is told to checkpoint before it starts.

    passes: `stages: {data: {time: 2h}}`    fails: `stages: {data: {time: 1min}}` with `signal_seconds: 90`
    """
    margin = spec.cluster.slurm.signal_seconds / 60
    for name, own in spec.cluster.slurm.stages.items():
        if own.time is not None and own.time <= margin:
            yield Finding(("cluster", "slurm", "stages", name, "time"),
                          f"the time limit of stage {name!r} ({own.time:g} min) is not longer than the requeue signal's "
                          f"margin ({margin:g} min, signal_seconds)", f"give it at least {int(margin * 4) + 1} min")
