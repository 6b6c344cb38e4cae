"""The accelerator catalog: peak FLOP/s, memory and interconnect per device type, with sources.

Loaded from `accelerators.json` next to this file (package data), so a user's machine
needs nothing else. Loading is cached: validate and plan read it once per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Accelerator:
    """One device type from the catalog."""

    id: str
    name: str
    kind: str
    peak_tflops: dict[str, float]
    memory_gb: float
    memory_bw_tbps: float
    devices_per_node: int
    intra_node_gbps: float
    inter_node_gbps: float
    cost_per_device_hour: float
    fp8: bool
    bf16: bool
    sources: list[str]
    uncertain: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def memory_gib(self) -> float:
        """Capacity in GiB (marketed GB are decimal)."""
        return self.memory_gb * 1e9 / 2**30


@cache
def load_catalog() -> dict[str, Accelerator]:
    """Catalog id -> Accelerator."""
    raw = json.loads((Path(__file__).parent / "accelerators.json").read_text())
    known = set(Accelerator.__dataclass_fields__) - {"extra"}
    catalog = {}
    for entry in raw["devices"]:
        fields = {k: v for k, v in entry.items() if k in known}
        extra = {k: v for k, v in entry.items() if k not in known}
        catalog[entry["id"]] = Accelerator(**fields, extra=extra)
    return catalog


def accelerator_ids() -> list[str]:
    """Every catalog id, in catalog order."""
    return list(load_catalog())
