"""Quantities derived from a validated spec that several phases need alike
(device counts), computed in one place; parallel degrees live in `specc.spec.parallel_dims`."""

from __future__ import annotations

from specc.catalog import load_catalog
from specc.spec.cluster import ClusterSpec


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
