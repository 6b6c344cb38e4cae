"""Quantities derived from a validated spec that several phases need alike
(device counts, the resolved data-parallel degree), computed in one place."""

from __future__ import annotations

from specc.catalog import load_catalog
from specc.spec.cluster import ClusterSpec
from specc.spec.parallel import ParallelSpec


def devices_per_node(cluster: ClusterSpec) -> int:
    """Devices per node from the spec, else from the catalog, else 1."""
    if cluster.devices_per_node is not None:
        return cluster.devices_per_node
    accelerator = load_catalog().get(cluster.accelerator)
    if cluster.nodes == 1 and cluster.devices is not None:
        return cluster.devices
    return accelerator.devices_per_node if accelerator else 1


def total_devices(cluster: ClusterSpec) -> int:
    """All devices of the run: `devices` when given, else nodes x devices per node."""
    if cluster.devices is not None:
        return cluster.devices
    return cluster.nodes * devices_per_node(cluster)


def model_parallel_size(parallel: ParallelSpec) -> int:
    """Devices one model replica spans: tp x pp x cp."""
    return parallel.tp * parallel.pp * parallel.cp


def data_parallel_size(parallel: ParallelSpec, devices: int) -> int | None:
    """The dp degree: explicit, or devices / (tp x pp x cp) when that divides evenly."""
    if parallel.dp != "auto":
        return parallel.dp
    replica = model_parallel_size(parallel)
    return devices // replica if devices % replica == 0 else None
