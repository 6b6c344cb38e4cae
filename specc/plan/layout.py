"""The planner's resolved view of a parallel layout and of the hardware it runs on.

`Layout` is a ParallelSpec with every `auto` resolved (dp an int, grad_accum derived), cheap
to build in the search loop. `Hardware` gathers the catalog figures the memory and time
models read, for one precision; TPU specifics come from `specc.plan.tpu`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from specc.catalog import Accelerator
from specc.plan import tpu
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import Capabilities
from specc.spec.parallel import ParallelSpec


@dataclass(frozen=True)
class Layout:
    """An explicit layout: dp x tp x pp x cp devices, ep carved out of dp x cp."""

    dp: int
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    vpp: int = 1
    zero_stage: int = 0
    fsdp: bool = False
    hsdp_replicas: int = 1
    sp: bool = False
    micro_batch: int = 1
    grad_accum: int = 1
    recompute: str = "none"
    selective_policy: str = "matmuls"
    """What `selective` recompute keeps (`parallel.selective_policy`): every matmul output, or
    torchtitan's alternate matmuls."""
    recompute_every: int = 1
    """Under `full` recompute, every n-th block is recomputed (`parallel.recompute_every`)."""
    pp_schedule: str = "1f1b"
    precision: str = "bf16"
    fp8_recipe: str = "tensorwise"
    """The float8 scaling recipe under `precision: fp8` (`parallel.fp8_recipe`)."""
    tp_comm_overlap: bool = False
    """Tensor-parallel collectives pipelined with their GEMMs (`parallel.tp_comm_overlap`, planned only)."""
    pp_comm_overlap: bool = False
    """Pipeline sends overlapped in the steady 1F1B phase (`parallel.pp_comm_overlap`, planned only)."""
    compile: bool = False
    grad_sync: str = "every"
    """When FSDP reduces gradients under accumulation (`parallel.grad_sync`): after `every`
    micro-batch, or on the `last` one only, keeping unsharded fp32 gradients in between
    (`set_requires_gradient_sync` in specc/runtime/train/loop.py)."""
    loss: str = "auto"
    """How the head and cross-entropy run (`parallel.loss`): `chunked`, `full`, or `auto` (the runtime's
    preferred, `specc.spec.capabilities`)."""
    loss_chunk_tokens: int = 1024
    """Tokens per chunk of the chunked loss (`parallel.loss_chunk_tokens`)."""
    stack: str = "specc"
    """The training stack whose memory habits the memory model assumes (`specc.plan.memory.STACKS`):
    `specc` (specc's torch runtime: FSDP2/DTensor, fp32 parameters cast on the fly, torchao fp8) or
    `megatron` (Megatron-Core with Transformer Engine: 16-bit parameters with fp32 master weights in the
    optimizer, TE's fused layers and fp8 weight workspaces, vocab-parallel cross-entropy). Not a spec
    field: specc plans its own runtime; `benchmarks/plan_vs_published.py` plans published Megatron and
    NeMo runs with `megatron`."""
    grad_bytes: float | None = None
    """Bytes per gradient element the stack keeps; None: the stack's default (specc and Megatron bf16/fp8:
    fp32 main gradients, 4; Megatron fp16: 2). NeMo's performance scripts sync gradients in bf16 (2)."""

    @property
    def devices(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def sharded_states(self) -> int:
        """ZeRO stage in effect: FSDP shards parameters, gradients and optimizer (stage 3)."""
        return 3 if self.fsdp else self.zero_stage

    @property
    def shard_degree(self) -> int:
        """Ranks that split sharded model states: dp x cp (Megatron distributed optimizer,
        torchtitan FSDP over the dp x cp mesh), divided by HSDP replicas."""
        return max(1, self.dp * self.cp // self.hsdp_replicas)

    @property
    def sequence_parallel(self) -> bool:
        return self.sp and self.tp > 1

    def contract(self) -> dict:
        """The plan contract's `layout` object (extra fields welcome)."""
        data = asdict(self)
        data["zero_stage"] = self.sharded_states
        if self.precision != "fp8":
            del data["fp8_recipe"]  # read only under fp8
        for overlap in ("tp_comm_overlap", "pp_comm_overlap"):
            if not data[overlap]:
                del data[overlap]  # planned only: present in plans that ask for it
        if self.recompute != "full" or self.recompute_every == 1:
            del data["recompute_every"]  # read only under full recompute; 1 is every block
        if self.stack == "specc" and self.grad_bytes is None:
            del data["stack"], data["grad_bytes"]  # planning another stack is the benchmark's business
        return data

    def to_parallel_spec(self) -> ParallelSpec:
        """The explicit ParallelSpec the pretrain stage receives."""
        return ParallelSpec(dp=self.dp, tp=self.tp, pp=self.pp, cp=self.cp, ep=self.ep, vpp=self.vpp,
                            zero_stage=0 if self.fsdp else self.zero_stage, fsdp=self.fsdp,
                            hsdp_replicas=self.hsdp_replicas, sp=self.sp, micro_batch=self.micro_batch,
                            recompute=self.recompute, selective_policy=self.selective_policy,
                            recompute_every=self.recompute_every, pp_schedule=self.pp_schedule, precision=self.precision, fp8_recipe=self.fp8_recipe,
                            tp_comm_overlap=self.tp_comm_overlap, pp_comm_overlap=self.pp_comm_overlap,
                            compile=self.compile, grad_sync=self.grad_sync, loss=self.loss,
                            loss_chunk_tokens=self.loss_chunk_tokens)


def layout_from_spec(parallel: ParallelSpec, dp: int, batch_sequences: int | None,
                     capabilities: Capabilities) -> Layout:
    """Resolve a ParallelSpec (dp given by the caller) as the target's runtime runs it: gradient
    accumulation derived, the ZeRO stage the runtime really executes (`Capabilities.effective_zero_stage`)."""
    grad_accum = dims.grad_accum_steps(batch_sequences or dp * parallel.micro_batch, dp, parallel.micro_batch)
    replicas = parallel.hsdp_replicas if parallel.fsdp else 1
    stage = capabilities.effective_zero_stage(parallel.zero_stage, parallel.fsdp, dp * parallel.cp // replicas)
    return Layout(dp=dp, tp=parallel.tp, pp=parallel.pp, cp=parallel.cp, ep=parallel.ep, vpp=parallel.vpp,
                  zero_stage=0 if stage == 3 else stage, fsdp=stage == 3, hsdp_replicas=replicas,
                  sp=parallel.sp, micro_batch=parallel.micro_batch, grad_accum=grad_accum,
                  recompute=parallel.recompute, selective_policy=parallel.selective_policy,
                  recompute_every=parallel.recompute_every, pp_schedule=parallel.pp_schedule, precision=parallel.precision, fp8_recipe=parallel.fp8_recipe,
                  tp_comm_overlap=parallel.tp_comm_overlap, pp_comm_overlap=parallel.pp_comm_overlap,
                  compile=parallel.compile, grad_sync=parallel.grad_sync, loss=parallel.loss,
                  loss_chunk_tokens=parallel.loss_chunk_tokens)


@dataclass(frozen=True)
class Hardware:
    """Catalog figures for one accelerator type, count and precision."""

    accelerator: Accelerator
    count: int
    devices_per_node: int
    precision: str
    peak_tflops: float
    memory_gib: float
    memory_bw_tbps: float
    fast_gbps: float
    """Per-device bandwidth inside the fast domain (NVLink node, TPU ICI slice), one direction, GB/s."""
    slow_gbps: float
    """Per-device bandwidth between fast domains (InfiniBand/RoCE, TPU DCN), GB/s."""
    fast_domain: int
    """Devices joined by the fast interconnect: a node (GPU) or a slice (TPU)."""
    compute_scale: float = 1.0
    """`cluster.profile.compute_scale`: measured / predicted compute time on this cluster."""
    comm_scale: float = 1.0
    """`cluster.profile.communication_scale`: measured / predicted exposed communication."""

    @property
    def is_tpu(self) -> bool:
        return self.accelerator.kind == "tpu"

    def bandwidth_gbps(self, group: int, stride: int) -> float:
        """Per-rank bus bandwidth of a ring collective over `group` ranks placed `stride` apart.

        Inside one fast domain: the fast link. Across domains, NCCL runs one ring per NIC and the ring's
        segments inside a node go over NVLink, so each node boundary is crossed by k rings at once, k =
        the group's ranks per node, each with its own NIC: bandwidth = min(fast, k x slow) (nccl-tests
        multi-node all-reduce bus bandwidth on 8 x 400G H100 nodes is ~350-400 GB/s, not 50).
        """
        if group * stride <= self.fast_domain:
            return self.fast_gbps
        per_domain = max(1, min(group, self.fast_domain // max(1, stride)))
        return min(self.fast_gbps, self.slow_gbps * per_domain)


def compute_precision(parallel, accelerator: Accelerator) -> str:
    """The precision a spec computes in: `parallel.precision`, or under `parallel: auto` fp32 on a
    CPU, else bf16 where the accelerator has it, else fp16."""
    if not isinstance(parallel, str):
        return parallel.precision
    if accelerator.kind == "cpu":
        return "fp32"
    return "bf16" if accelerator.bf16 else "fp16"


def peak_tflops(accelerator: Accelerator, precision: str) -> float:
    """Dense peak for the compute precision; fp32 training uses tf32 tensor cores where they exist."""
    peaks = accelerator.peak_tflops
    if precision == "fp32":
        return peaks.get("tf32", peaks.get("fp32", peaks.get("bf16", 0.0)))
    if precision == "fp16":
        return peaks.get("fp16", peaks.get("bf16", 0.0))
    if precision == "fp8":
        return peaks.get("fp8", peaks.get("bf16", 0.0))
    return peaks.get("bf16", peaks.get("fp16", 0.0))


def hardware_for(accelerator: Accelerator, count: int, devices_per_node: int, precision: str) -> Hardware:
    """Hardware view for the time and memory models; TPUs get ICI/DCN from `specc.plan.tpu`."""
    if accelerator.kind == "tpu":
        fast, slow, domain = tpu.interconnect(accelerator, count)
    else:
        # an NVLink domain may span nodes (GB200 NVL72, `cluster.network.fast_domain_devices`)
        domain = max(devices_per_node, int(accelerator.extra.get("fast_domain_devices", devices_per_node)))
        fast, slow = accelerator.intra_node_gbps, accelerator.inter_node_gbps
    profile = accelerator.extra.get("calibration") or {}
    return Hardware(accelerator=accelerator, count=count, devices_per_node=devices_per_node, precision=precision,
                    peak_tflops=peak_tflops(accelerator, precision), memory_gib=accelerator.memory_gib,
                    memory_bw_tbps=accelerator.memory_bw_tbps, fast_gbps=fast, slow_gbps=slow, fast_domain=domain,
                    compute_scale=float(profile.get("compute_scale", 1.0)),
                    comm_scale=float(profile.get("communication_scale", 1.0)))


def compute_element_bytes(layout: Layout) -> float:
    """Bytes per element of activations and gathered weights: 16-bit under mixed precision, else fp32."""
    return 4.0 if layout.precision == "fp32" else 2.0
