"""Quantities derived from a validated spec that several phases need alike
(device counts), computed in one place; parallel degrees live in `specc.spec.parallel_dims`."""

from __future__ import annotations

import dataclasses

from specc.catalog import Accelerator, load_catalog
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


def cluster_accelerator(cluster: ClusterSpec) -> Accelerator | None:
    """The catalog entry for `cluster.accelerator` with the cluster's `accelerator_overrides` and
    `network` applied (None for an unknown id): what the planner sizes and times. A TPU's fast domain
    is its slice (`max_slice_chips`), a GPU's the catalog-extra `fast_domain_devices` (default: one node)."""
    accelerator = load_catalog().get(cluster.accelerator)
    if accelerator is None:
        return None
    changes: dict = {}
    extra = dict(accelerator.extra)
    overrides = cluster.accelerator_overrides
    if overrides is not None:
        for name in ("name", "memory_gb", "memory_bw_tbps", "cost_per_device_hour"):
            if getattr(overrides, name) is not None:
                changes[name] = getattr(overrides, name)
        if overrides.memory_gb is not None:
            extra.pop("memory_gib", None)  # the catalog's device-reported capacity no longer applies
        if overrides.peak_tflops:
            changes["peak_tflops"] = {**accelerator.peak_tflops, **{k: float(v) for k, v in overrides.peak_tflops.items()}}
        for name in ("achievable_matmul_fraction", "achievable_attention_fraction"):
            if getattr(overrides, name) is not None:
                extra[name] = float(getattr(overrides, name))
    network = cluster.network
    if network is not None:
        for name in ("inter_node_gbps", "intra_node_gbps"):
            if getattr(network, name) is not None:
                changes[name] = float(getattr(network, name))
        if network.fast_domain_devices is not None:
            extra["max_slice_chips" if accelerator.kind == "tpu" else "fast_domain_devices"] = network.fast_domain_devices
    if cluster.profile is not None:
        extra["calibration"] = cluster.profile.model_dump(mode="json")
    if not changes and extra == accelerator.extra:
        return accelerator
    return dataclasses.replace(accelerator, **changes, extra=extra)
