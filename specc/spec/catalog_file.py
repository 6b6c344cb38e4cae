"""A user catalog file (`cluster.catalog: my-gpus.yaml`): accelerators in the built-in catalog's schema.

The file holds `devices:`, a list of entries shaped like those of `specc/catalog/accelerators.json`
(the built-in entries validate against `CatalogEntry` too, `tests/spec/test_catalog_file.py`), so a
cluster the catalog lacks (a power-capped part, a new accelerator) is described once, with sources,
and used by validate, plan, search, calibrate and the runtime's capability checks.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Identifier, Number, PositiveCount

Fraction = Annotated[Number, Field(gt=0, le=1)]

PEAK_KEYS = Literal["bf16", "fp16", "fp8", "tf32", "fp32", "fp4", "int8"]
"""Precisions a catalog entry may give a peak for (`accelerators.json` uses all of them)."""


class CatalogEntry(SpecModel):
    """One accelerator type, in the fields of `specc/catalog/accelerators.json`."""

    id: Identifier
    """What `cluster.accelerator` names (lower case; not a built-in id: use `accelerator_overrides` to
    change a built-in entry)."""
    name: Annotated[str, Field(min_length=1, max_length=80)]
    """Shown in plans and messages."""
    kind: Literal["gpu", "tpu", "cpu"]
    """Which specc runtime trains on it (`specc.spec.capabilities`)."""
    peak_tflops: Annotated[dict[PEAK_KEYS, Annotated[Number, Field(gt=0)]], Field(min_length=1)]
    """Dense peak TFLOP/s per precision (`bf16: 989`)."""
    memory_gb: Annotated[Number, Field(gt=0, le=100_000)]
    """HBM capacity, decimal GB as marketed."""
    memory_gib: Annotated[Number, Field(gt=0)] | None = None
    """The capacity the device reports, GiB (nvidia-smi's total; XLA's HBM limit plus its reserve): what
    the planner compares with when given, since HBM is binary-sized (an H100 '80 GB' reports 79.65 GiB)."""
    memory_bw_tbps: Annotated[Number, Field(gt=0)]
    """HBM bandwidth, TB/s."""
    devices_per_node: PositiveCount
    """Devices per node (TPU: chips per host)."""
    intra_node_gbps: Annotated[Number, Field(gt=0)]
    """Per-device bandwidth inside a node (NVLink, ICI), one direction, GB/s."""
    inter_node_gbps: Annotated[Number, Field(gt=0)]
    """Per-device bandwidth between nodes, GB/s."""
    cost_per_device_hour: Annotated[Number, Field(ge=0)] = 0.0
    """USD per device-hour."""
    fp8: bool = False
    """fp8 tensor cores (what `precision: fp8` needs)."""
    bf16: bool = True
    """bf16 support (what `precision: bf16` needs)."""
    sources: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """Where each figure comes from (a datasheet, a measurement)."""
    uncertain: list[str] = []
    """Figures not read from a source."""
    achievable_matmul_fraction: Fraction | None = None
    """Best-case GEMM throughput over the bf16 peak (a measured MAMF)."""
    achievable_attention_fraction: Fraction | None = None
    """Best-case FlashAttention-2 throughput over the bf16 peak."""
    attention_kernel_fractions: dict[Literal["flash2", "cudnn", "flash3"], Fraction] = {}
    """Best-case throughput of other attention kernels over the bf16 peak."""
    mx_tensor_cores: bool = False
    """Tensor cores that run MXFP8 block-scaled GEMMs natively (Blackwell)."""
    fast_domain_devices: PositiveCount | None = None
    """GPUs: devices sharing the NVLink domain (72 for NVL72); default one node."""
    ici_link_gbps: Annotated[Number, Field(gt=0)] | None = None
    """TPUs: bandwidth per ICI link, GB/s."""
    ici_links: PositiveCount | None = None
    """TPUs: ICI links per chip."""
    torus: Literal["2d", "3d"] | None = None
    """TPUs: ICI topology."""
    host_topology: list[PositiveCount] | None = None
    """TPUs: chips per host along each torus axis."""
    max_slice_chips: PositiveCount | None = None
    """TPUs: the largest slice (the ICI domain)."""

    def catalog_dict(self) -> dict:
        """The entry as `accelerators.json` writes it (unset optional figures left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class CatalogFile(SpecModel):
    """The file `cluster.catalog` names."""

    description: str | None = None
    """What these accelerators are."""
    devices: Annotated[list[CatalogEntry], Field(min_length=1)]
    """The accelerators, each usable as `cluster.accelerator`."""
