"""Spec section `cluster`: where the run executes."""

from __future__ import annotations

import shlex
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from specc.spec.base import SpecModel
from specc.spec.reliability import ReliabilitySpec
from specc.spec.types import Email, Number, PositiveCount, PositiveMinutes, SlurmConstraint, SlurmWord


def _shell_words(line: str) -> str:
    """A setup line must split into shell words; the emitter quotes each word, so it runs as one
    command with literal arguments (`module load cuda/12.4`), never as shell code."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise ValueError(f"cannot split {line!r} into shell words ({error}); balance its quotes") from None
    if not words:
        raise ValueError("a setup line cannot be empty")
    return line


SetupLine = Annotated[str, AfterValidator(_shell_words)]


class StageResourcesSpec(SpecModel):
    """What one stage asks Slurm for; each key left out comes from the plan and `cluster.slurm`
    (`specc.emit.resources`). Nodes and devices are checked against what the stage's runtime runs."""

    nodes: PositiveCount | None = None
    """Nodes; training spans `cluster.nodes`, every other stage runs on one."""
    devices_per_node: Annotated[int, Field(ge=0)] | None = None
    """Accelerators per node; training uses `cluster.devices_per_node`, alignment/eval/deploy one, data and tokenize none."""
    cpus_per_task: PositiveCount | None = None
    """CPUs of the stage's one task per node; default `cluster.slurm.cpus_per_task`, for data at least `dedup.num_workers`."""
    mem: str | None = Field(default=None, pattern=r"^[0-9]+[KMGT]?$")
    """Memory per node in Slurm's form (`0` = all, `64G`); default `cluster.slurm.mem`."""
    partition: SlurmWord | None = None
    """Partition; default `cluster.slurm.cpu_partition` for data and tokenize, else `cluster.slurm.partition`."""
    time: PositiveMinutes | None = None
    """Time limit per job of this stage, e.g. `2h`; default `cluster.slurm.time`."""
    exclusive: bool | None = None
    """Whole nodes; default `cluster.slurm.exclusive` for training, off for the other stages."""


class SlurmSpec(SpecModel):
    """Slurm job settings. Values are validated by pattern and shell-quoted in scripts."""

    partition: SlurmWord | None = None
    account: SlurmWord | None = None
    qos: SlurmWord | None = None
    time: PositiveMinutes = 240.0
    """Time limit per job, e.g. `4h`, `2-00:00:00`; jobs requeue and resume past it."""
    constraint: SlurmConstraint | None = None
    exclusive: bool = True
    mail_user: Email | None = None
    mail_type: list[Literal["BEGIN", "END", "FAIL", "REQUEUE", "ALL", "TIME_LIMIT_90"]] = []
    requeue: bool = True
    """Requeue on preemption, node failure and time limit."""
    max_requeues: Annotated[int, Field(ge=0)] = 10
    signal_seconds: Annotated[int, Field(ge=10, le=3600)] = 90
    """Seconds before the time limit that SIGUSR2 asks the trainer to checkpoint (submitit's USR2@90)."""
    data_array_tasks: Annotated[int, Field(ge=1, le=10000)] = 1
    """Run the data stage's filter-and-sign phase as a Slurm job array of this many tasks (each takes
    every n-th part of the corpus); one more job then deduplicates and mixes the whole corpus."""
    cpus_per_task: PositiveCount | None = None
    mem: str | None = Field(default=None, pattern=r"^[0-9]+[KMGT]?$")
    """Memory per node in Slurm's form (`0` = all, `500G`)."""
    cpu_partition: SlurmWord | None = None
    """Partition of the stages that use no accelerator (data, tokenize); default `partition`."""
    stages: dict[SlurmWord, StageResourcesSpec] = {}
    """Resources per stage, by stage name (`data`, `tokenize`, `pretrain`, an alignment stage's name,
    `eval`, `deploy`), e.g. `{data: {cpus_per_task: 64, mem: 256G, time: 12h}}`."""

    def training_time(self) -> float:
        """The training job's time limit in minutes: `stages.pretrain.time` (`pretrain_tpu` on TPU), else `time`."""
        for name in ("pretrain", "pretrain_tpu"):
            own = self.stages.get(name)
            if own is not None and own.time is not None:
                return own.time
        return self.time


class NetworkSpec(SpecModel):
    """The cluster's interconnect where it differs from the catalog's figures for the accelerator
    (read by `specc plan`; the runtime's NCCL/XLA discovers the real links itself)."""

    inter_node_gbps: Annotated[Number, Field(gt=0)] | None = None
    """Per-device bandwidth between nodes (or TPU slices: DCN), one direction, GB/s: a 400 Gb/s NIC per
    GPU is 50; default from the catalog."""
    intra_node_gbps: Annotated[Number, Field(gt=0)] | None = None
    """Per-device bandwidth inside the fast domain (NVLink, TPU ICI), one direction, GB/s; default from the catalog."""
    fast_domain_devices: PositiveCount | None = None
    """Devices joined by the fast interconnect: an NVLink domain larger than a node (GB200 NVL72: 72,
    18 nodes of 4) or the chips of one TPU slice in a multi-slice job. Default: one node (GPU), the
    whole job up to the largest slice (TPU). A multiple of devices_per_node (R253)."""


PRECISION_KEYS = Literal["bf16", "fp16", "fp8", "tf32", "fp32", "fp4"]


class AcceleratorOverrides(SpecModel):
    """Figures that replace the catalog's for `cluster.accelerator` (a custom part such as an H100 with
    96 GB HBM2e capped at 500 W): everything not named keeps the catalog value (read by `specc plan`)."""

    name: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    """A label for the plan and its messages."""
    memory_gb: Annotated[Number, Field(gt=0, le=100_000)] | None = None
    """HBM capacity, decimal GB as marketed."""
    memory_bw_tbps: Annotated[Number, Field(gt=0)] | None = None
    """HBM bandwidth, TB/s."""
    peak_tflops: dict[PRECISION_KEYS, Annotated[Number, Field(gt=0)]] = {}
    """Dense peak TFLOP/s per precision (`bf16: 912`); unnamed precisions keep the catalog's."""
    achievable_matmul_fraction: Annotated[Number, Field(gt=0, le=1)] | None = None
    """Best-case GEMM throughput over the bf16 peak (a measured MAMF); a power cap lowers it."""
    achievable_attention_fraction: Annotated[Number, Field(gt=0, le=1)] | None = None
    """Best-case FlashAttention-2 throughput over the bf16 peak."""
    cost_per_device_hour: Annotated[Number, Field(ge=0)] | None = None
    """USD per device-hour."""


class ProfileSpec(SpecModel):
    """A per-cluster calibration of the planner's step time, written by `specc calibrate` (apply its
    file with `extends:`): the planner's compute (GEMMs, attention, memory-bound work, bubble, optimizer)
    and communication are multiplied by the fitted scales, and plans print the profile's error bars."""

    name: Annotated[str, Field(min_length=1, max_length=120)]
    """Which cluster and runs the profile was fitted on."""
    accelerator: str
    """The catalog id the runs ran on; a profile applies to that accelerator only (R253)."""
    compute_scale: Annotated[Number, Field(gt=0)]
    """Measured / predicted time of the compute part."""
    communication_scale: Annotated[Number, Field(gt=0)] = 1.0
    """Measured / predicted time of the exposed communication (1 when the runs could not tell)."""
    runs: PositiveCount
    """Runs the scales were fitted on."""
    error_median_pct: Annotated[Number, Field(ge=0)]
    """Median |error| of the calibrated step time over the runs, %."""
    error_p90_pct: Annotated[Number, Field(ge=0)]
    """90th percentile of that |error|, %."""
    method: Literal["leave-one-run-out", "in-sample"]
    """How the errors were measured: each run predicted by scales fitted on the others, or (one run
    only) on the run itself, which says nothing about new runs."""


class ClusterSpec(SpecModel):
    """The hardware and scheduler."""

    executor: Literal["local", "slurm"] = "local"
    """`local` runs on this machine; `slurm` submits with submitit."""
    accelerator: str = "cpu"
    """Device type, an id from `specc catalog` (`h100-sxm`, `a100-80gb`, `tpu-v5p`, `cpu`, ...)."""
    nodes: PositiveCount = 1
    """Nodes (TPU: hosts)."""
    devices_per_node: PositiveCount | None = None
    """Devices per node; default from the catalog (8 for HGX GPUs, 4 chips per TPU v5p host)."""
    devices: PositiveCount | None = None
    """Total devices; when given must equal nodes x devices_per_node."""
    slurm: SlurmSpec = SlurmSpec()
    setup: list[SetupLine] = []
    """Environment set-up lines run before each stage (`module load cuda/12.4`); stored as data and quoted."""
    container: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/#@+-]{0,255}$")
    """A container image run by pyxis/enroot (`#SBATCH --container-image`), e.g. `nvcr.io#nvidia/pytorch:24.12-py3`."""
    container_mounts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+(:[A-Za-z0-9_./-]+)?(:(ro|rw))?$")]] = []
    """Host paths mounted into the container (`src[:dst[:ro]]`); mount the bundle and data directories."""
    reliability: ReliabilitySpec = ReliabilitySpec()
    """Interruption rate, checkpoint storage bandwidth and requeue delay: the plan's failure budget."""
    cost_per_device_hour: Annotated[Number, Field(ge=0)] | None = None
    """USD per device-hour for cost estimates; default from the catalog."""
    catalog: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """A YAML file of accelerators the built-in catalog lacks, relative to this spec, in its schema
    (`devices: [{id, name, kind, peak_tflops, memory_gb, ...}]`, `specc.spec.catalog_file`): their
    ids can then be used as `accelerator` by validate, plan, search, calibrate and the runtime."""
    accelerator_overrides: AcceleratorOverrides | None = None
    """Catalog figures replaced for this cluster's devices (custom memory, clocks, power caps)."""
    network: NetworkSpec | None = None
    """Interconnect figures replaced for this cluster (per-device inter-node bandwidth, NVLink/ICI domain)."""
    profile: ProfileSpec | None = None
    """Step-time calibration of this cluster (`specc calibrate` writes it)."""
