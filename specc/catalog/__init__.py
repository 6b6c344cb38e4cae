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


def _normalised(text: str) -> str:
    """Lowercase letters and digits only: `H100 SXM`, `h100_sxm` and `h100-sxm` read alike."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def closest_ids(name: str, limit: int = 3) -> list[str]:
    """Catalog ids a mistyped accelerator most likely meant, best first.

    Families share a prefix (`h100` -> `h100-sxm`, `h100-pcie`; `tpu-v5` -> `tpu-v5e`, `tpu-v5p`), so
    ids that start with or contain what was written (ignoring case and punctuation) come first;
    only when none does, the one closest by edit similarity (difflib), which would otherwise rank
    `h800` (one letter off) above `h100-sxm` for `h100`.
    """
    ids = accelerator_ids()
    wanted = _normalised(name)
    if not wanted:
        return []
    exact = [i for i in ids if _normalised(i) == wanted]
    prefix = [i for i in ids if _normalised(i).startswith(wanted) and i not in exact]
    inside = [i for i in ids if wanted in _normalised(i) and i not in exact + prefix]
    contained = [i for i in ids if _normalised(i) in wanted and i not in exact + prefix + inside]
    found = exact + prefix + inside + contained
    if found:
        return found[:limit]
    import difflib

    by_name = {_normalised(i): i for i in ids}
    return [by_name[m] for m in difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=0.6)]
