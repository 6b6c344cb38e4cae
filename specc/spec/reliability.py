"""Spec section `cluster.reliability`: the inputs of the plan's failure budget (`specc.plan.reliability`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Number, PositiveMinutes

LLAMA3_INTERRUPTIONS = 419
LLAMA3_DAYS = 54
LLAMA3_DEVICES = 16384
LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY = LLAMA3_INTERRUPTIONS / (LLAMA3_DAYS * LLAMA3_DEVICES)
"""419 unexpected interruptions in a 54-day snapshot of Llama 3 405B pretraining on 16,384 H100s
(Dubey et al. 2024, "The Llama 3 Herd of Models", sec. 3.3.4 and Table 5): 4.74e-4 per GPU-day,
one job interruption every 3.1 h at that scale (docs/formulas.md section 8)."""


class ReliabilitySpec(SpecModel):
    """How often the cluster interrupts a job and what a restart costs (the plan's failure budget)."""

    interruptions_per_device_day: Annotated[Number, Field(ge=0, le=1)] = round(LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY, 10)
    """Unexpected job interruptions per device per day; default Llama 3's 419 in 54 days on 16,384 GPUs (4.74e-4)."""
    storage_gbps_per_node: Annotated[Number, Field(gt=0, le=10000)] = 1.0
    """Checkpoint write and read bandwidth of one node to storage, GB/s (1e9 B/s); default 1, Llama 3's
    2 TB/s sustained Tectonic throughput over its 2,048 nodes."""
    storage_gbps: Annotated[Number, Field(gt=0)] | None = None
    """Aggregate bandwidth of the checkpoint file system, GB/s; caps nodes x storage_gbps_per_node."""
    requeue_delay: PositiveMinutes = 10.0
    """From an interruption to the restarted job training again, checkpoint reading excluded: failure
    detection, requeue, scheduling and start-up, e.g. `10min`."""
