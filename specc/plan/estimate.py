"""One layout evaluated: memory and time together, as the search and the plan both need them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from specc.plan.layout import Hardware, Layout, hardware_for
from specc.plan.loss_memory import loss_implementation
from specc.plan.memory import MemoryBreakdown, device_memory
from specc.plan.params import (FlopsPerToken, ParameterCount, count_parameters, flops_per_token, hardware_flops_per_token,
                               recomputed_share)
from specc.plan.timing import StepTime, step_time
from specc.catalog import Accelerator
from specc.spec.model import ModelSpec


@dataclass(frozen=True)
class Workload:
    """What does not change between candidate layouts: the model, the batch, the cluster."""

    model: ModelSpec
    seq_len: int
    batch_sequences: int
    accelerator: Accelerator
    devices: int
    devices_per_node: int

    @cached_property
    def counts(self) -> ParameterCount:
        return count_parameters(self.model)

    @cached_property
    def flops(self) -> FlopsPerToken:
        """Causal attention: the convention the plan reports MFU in."""
        return flops_per_token(self.model, self.seq_len, causal=True, counts=self.counts)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_sequences * self.seq_len

    def hardware(self, precision: str) -> Hardware:
        return hardware_for(self.accelerator, self.devices, self.devices_per_node, precision)


@dataclass(frozen=True)
class Estimate:
    """A layout with its predicted memory and step time."""

    layout: Layout
    memory: MemoryBreakdown
    time: StepTime

    @property
    def fits(self) -> bool:
        return self.memory.fits


def estimate_layout(work: Workload, layout: Layout, hardware: Hardware | None = None) -> Estimate:
    """Predict memory and step time of `layout` for `work`."""
    hardware = hardware or work.hardware(layout.precision)
    memory = device_memory(work.model, work.counts, layout, hardware, work.seq_len)
    hw_flops = hardware_flops_per_token(work.flops, layout.recompute, layout.selective_policy,
                                        work.model.attention == "eager",
                                        loss_implementation(layout, hardware.is_tpu) == "chunked",
                                        recomputed_share(work.model.num_layers, layout.recompute, layout.recompute_every))
    time = step_time(work.model, work.counts, work.flops, hw_flops, layout, hardware, work.seq_len,
                     work.tokens_per_step)
    return Estimate(layout=layout, memory=memory, time=time)
