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
        """Capacity in GiB: the capacity the device reports (catalog `memory_gib`: nvidia-smi's total, XLA's
        HBM limit plus its reserve) where the catalog has it, else the marketed decimal GB. HBM stacks are
        binary-sized, so an H100's "80 GB" is 79.6 GiB as reported, not 80e9 bytes (74.5 GiB)."""
        reported = self.extra.get("memory_gib")
        return float(reported) if reported is not None else self.memory_gb * 1e9 / 2**30


@cache
def builtin_catalog() -> dict[str, Accelerator]:
    """Catalog id -> Accelerator, from `accelerators.json` only."""
    raw = json.loads((Path(__file__).parent / "accelerators.json").read_text())
    return {entry["id"]: accelerator_from_entry(entry) for entry in raw["devices"]}


def accelerator_from_entry(entry: dict) -> Accelerator:
    """One catalog entry (the JSON object of `accelerators.json`, or of a user catalog file) as an
    Accelerator: the known fields as such, every other key in `extra`."""
    known = set(Accelerator.__dataclass_fields__) - {"extra"}
    fields = {k: v for k, v in entry.items() if k in known}
    extra = {k: v for k, v in entry.items() if k not in known}
    return Accelerator(**fields, extra=extra)


def entry_of(accelerator: Accelerator) -> dict:
    """The catalog entry an Accelerator was read from (`accelerator_from_entry`'s inverse)."""
    fields = {name: getattr(accelerator, name) for name in Accelerator.__dataclass_fields__ if name != "extra"}
    return {**fields, **accelerator.extra}


_user: dict[str, dict[str, Accelerator]] = {"entries": {}, "merged": {}}
"""The spec's `cluster.catalog` accelerators, registered by `use_user_catalog`."""


def load_catalog() -> dict[str, Accelerator]:
    """Catalog id -> Accelerator: the built-in entries, plus those of the spec's `cluster.catalog` file
    once validate has loaded it (`use_user_catalog`): the CLI checks one spec per process, so every
    phase after validate (rules, plan, search, calibrate, bundle) sees the same accelerators."""
    return _user["merged"] if _user["entries"] else builtin_catalog()


def use_user_catalog(entries: dict[str, Accelerator]) -> None:
    """Make `entries` (a user catalog file's accelerators, ids distinct from the built-in ones) part of
    `load_catalog()` until the next call; an empty dict goes back to the built-in catalog. Called for
    every spec checked (`specc.diagnostics.check.check_file`), so one spec's entries never leak into the next."""
    _user["entries"] = dict(entries)
    _user["merged"] = {**builtin_catalog(), **entries}


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
