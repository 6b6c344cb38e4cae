"""TPU specifics of the planner: ICI inside a slice, DCN between slices, and XLA's memory habits.

The memory and time models are shared with GPUs (HBM per chip plays the part of GPU memory);
only the interconnect and the reserve differ, and live here so that TPU work can deepen them
without touching the GPU path.
"""

from __future__ import annotations

from specc.catalog import Accelerator

RESERVE_GIB = 0.5
"""HBM XLA keeps for its runtime and program (no CUDA context, no caching allocator);
MaxText's memory reports leave ~0.5 GiB unaccounted on v4/v5p (uncertain, not fitted)."""

FRAGMENTATION = 0.02
"""XLA plans buffers statically: far less fragmentation than a caching allocator."""


def slice_chips(accelerator: Accelerator, count: int) -> int:
    """Chips in one ICI slice: the whole job up to the catalog's largest slice (v5p: 8960, v5e: 256)."""
    largest = int(accelerator.extra.get("max_slice_chips", count))
    return min(count, largest)


def interconnect(accelerator: Accelerator, count: int) -> tuple[float, float, int]:
    """(ICI GB/s per chip, DCN GB/s per chip, chips per slice).

    ICI per chip = links x per-link bandwidth (the catalog's intra_node_gbps, e.g. v5p 6 x 90 GB/s;
    How to Scale Your Model, 'TPUs' chapter); a ring collective along one torus axis uses two of
    them, so the all-reduce bandwidth is links/3 (3-D torus) or links/2 (2-D) of that figure.
    Between slices traffic goes over the data-centre network (DCN, ~25 GB/s per chip).
    """
    links = int(accelerator.extra.get("ici_links", 4))
    per_link = float(accelerator.extra.get("ici_link_gbps", accelerator.intra_node_gbps / max(links, 1)))
    ring = 2 * per_link  # both directions of one axis' links carry a bidirectional ring
    return ring, accelerator.inter_node_gbps, slice_chips(accelerator, count)
