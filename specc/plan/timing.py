"""Time per optimizer step: compute at an achievable fraction of peak, plus exposed communication.

Overlap rules (stated once, applied everywhere):
- Tensor-parallel and expert-parallel collectives sit on the critical path (Megatron default,
  no TP comm overlap): fully exposed.
- Context-parallel ring attention passes K/V while the previous chunk is computed: exposed only
  where the transfer is longer than the layer's attention compute.
- Data-parallel gradient sync (DDP / ZeRO-1/2) overlaps the backward pass of the last micro-batch;
  FSDP/ZeRO-3 all-gathers and reduce-scatters overlap each micro-batch's forward and backward.
  In both cases at least one layer's share (1 / layers) stays exposed.
- Pipeline: the bubble (p-1)/(m v) of the compute time (Narayanan et al. 2021, eq. 1 and sec. 2.2.1)
  plus point-to-point sends on the critical path.
- The optimizer step is memory-bound and runs after everything else.

Collective costs are the ring formulas (formulas.md section 5): all-reduce 2(n-1)/n S/BW,
reduce-scatter / all-gather (n-1)/n S/BW, all-to-all (n-1)/n S/BW.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.plan.layout import Hardware, Layout, peak_tflops
from specc.plan.params import FlopsPerToken, ParameterCount
from specc.plan.memory import stage_layers, stage_params
from specc.spec.model import ModelSpec

# --- efficiency constants ----------------------------------------------------------------------
# MATMUL_EFFICIENCY, GEMM_HALF_DIM, GEMM_HALF_TOKENS, ATTENTION_EFFICIENCY and ELEMENTWISE_PASSES were
# fitted (`python benchmarks/plan_vs_published.py --fit`, grid search) on the fit split of
# benchmarks/data/published_runs.json only: llm-foundry on A100 and Megatron SC21 (80 runs). The
# other 101 runs (llm-foundry H100, Korthikanti, torchtitan, MaxText TPU) are held out.
DEFAULT_MATMUL_FRACTION = 0.8
"""Best-case GEMM throughput over the dense peak for devices whose catalog entry has no measured
`achievable_matmul_fraction` (MAMF; A100 0.859, H100 0.801 in the catalog)."""
MATMUL_EFFICIENCY = {"gpu": 0.95, "tpu": 0.95, "cpu": 0.5}
"""Fraction of the best-case GEMM rate that a training step's GEMMs sustain at large shapes (kernel
choice, launch gaps, fused epilogues), before the shape factors below."""
GEMM_HALF_DIM = 256.0
"""Per-device GEMM width (h / tp) at which shape losses cost a further factor 1 / (1 + 256 / width):
small matrices under-fill the tensor cores (wave quantisation, tile edges)."""
GEMM_HALF_TOKENS = 256.0
"""Tokens per micro-batch per device below which GEMM efficiency falls as 1 / (1 + 256 / tokens)."""
DEFAULT_ATTENTION_FRACTION = 0.5
"""FlashAttention throughput over peak where the catalog has no `achievable_attention_fraction`
(A100 0.72, H100 0.34 from the FlashAttention-2 paper)."""
ATTENTION_EFFICIENCY = 0.5
"""Fraction of that best case a training step's attention sustains (causal masking, sequence
lengths, kernel launch); scaled by head_dim / (head_dim + 32) for smaller heads."""
ELEMENTWISE_PASSES = 8.0
"""Memory-bound work (norms, activations, residuals, rotary, softmax outside flash): every stored
activation byte is read/written this many times per training pass at HBM bandwidth."""
COMPILED_ELEMENTWISE_FRACTION = 0.5
"""Share of that memory traffic left when a compiler fuses pointwise chains into their neighbours
(XLA on TPU always; torch.compile with `parallel.compile`): a prior, not fitted (torchtitan's
Llama 3 8B gains 16% tokens/s from compile, consistent with halving the eager traffic)."""
FP8_SPEEDUP_EFFICIENCY = 0.6
"""fp8 GEMMs (Transformer Engine / torchao float8) realise ~60% of the 2x peak ratio over bf16
(scaling, casts and amax bookkeeping); torchtitan reports +20-50% throughput."""
LINK_EFFICIENCY = 0.8
"""Achieved bus bandwidth of NCCL/ICI collectives relative to the link figure (nccl-tests on
NVLink4 reach ~360 of 450 GB/s)."""
TPU_LINK_EFFICIENCY = 0.7
"""XLA collectives on ICI rings reach less of the link figure than NCCL on NVSwitch (uncertain)."""


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step, by part, and the throughput figures derived from it."""

    compute: float
    bubble: float
    tp_comm: float
    cp_comm: float
    pp_comm: float
    dp_comm: float
    ep_comm: float
    optimizer: float
    tokens_per_step: int
    devices: int
    model_flops_per_token: float
    hardware_flops_per_token: float
    peak_tflops: float

    @property
    def step_s(self) -> float:
        return (self.compute + self.bubble + self.tp_comm + self.cp_comm + self.pp_comm + self.dp_comm
                + self.ep_comm + self.optimizer)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation (PaLM App. B): model FLOPs (causal attention, no recompute) per
        second over the devices' dense peak for the compute precision."""
        return self.model_flops_per_token * self.tokens_per_s / (self.devices * self.peak_tflops * 1e12)

    @property
    def hfu(self) -> float:
        """Hardware FLOPs utilisation: as MFU, counting recomputation."""
        return self.hardware_flops_per_token * self.tokens_per_s / (self.devices * self.peak_tflops * 1e12)

    def breakdown(self) -> dict:
        return {k: round(getattr(self, k), 6) for k in
                ("compute", "bubble", "tp_comm", "cp_comm", "pp_comm", "dp_comm", "ep_comm", "optimizer")}


def _kind(hardware: Hardware) -> str:
    return hardware.accelerator.kind if hardware.accelerator.kind in MATMUL_EFFICIENCY else "gpu"


def matmul_efficiency(model: ModelSpec, layout: Layout, hardware: Hardware, seq_len: int) -> float:
    """Achievable fraction of peak for the layer GEMMs, from the per-device shapes: the catalog's
    best-case GEMM fraction (MAMF) x a software factor x shape losses for a narrow per-device width
    (h / tp, the dimension tensor parallelism shrinks) and few tokens per micro-batch.

    (A per-GEMM narrowest-dimension variant fitted the same rows equally well but generalised worse
    to the held-out sources, so the one-number width stays.)
    """
    fraction = float(hardware.accelerator.extra.get("achievable_matmul_fraction", DEFAULT_MATMUL_FRACTION))
    if _kind(hardware) == "cpu":
        # CPU GEMMs have no tensor-core tiles or waves to under-fill: no shape losses (the tiny spec's
        # 64-wide model sustains ~35% of one core's sgemm peak in training, measured 2026-11-23).
        return fraction * MATMUL_EFFICIENCY["cpu"]
    width = model.hidden_size / layout.tp
    tokens = layout.micro_batch * seq_len / layout.cp
    return (fraction * MATMUL_EFFICIENCY[_kind(hardware)] / (1 + GEMM_HALF_DIM / width)
            / (1 + GEMM_HALF_TOKENS / tokens))


def compute_time(model: ModelSpec, flops: FlopsPerToken, hardware_flops: float, layout: Layout, hardware: Hardware, seq_len: int, tokens_per_step: int) -> float:
    """Seconds of arithmetic per step on one device: GEMMs, attention and memory-bound elementwise work."""
    devices = layout.devices
    recompute_factor = hardware_flops / flops.model
    matmul_peak = hardware.peak_tflops * 1e12
    bf16_peak = peak_tflops(hardware.accelerator, "bf16" if layout.precision == "fp8" else layout.precision) * 1e12
    if layout.precision == "fp8":  # peak doubles, but only part of it is realised
        matmul_peak = bf16_peak * (1 + (hardware.peak_tflops * 1e12 / bf16_peak - 1) * FP8_SPEEDUP_EFFICIENCY)
    matmul = flops.matmul * recompute_factor * tokens_per_step / devices
    attention = (hardware_flops - flops.matmul * recompute_factor) * tokens_per_step / devices
    eff = matmul_efficiency(model, layout, hardware, seq_len)
    head = model.head_size
    attn_fraction = float(hardware.accelerator.extra.get("achievable_attention_fraction", DEFAULT_ATTENTION_FRACTION))
    attn_eff = attn_fraction * ATTENTION_EFFICIENCY * head / (head + 32)
    # Each device runs L/pp layers on B/dp sequences of s/cp tokens, 1/tp of each tensor.
    elementwise = _elementwise_bytes_per_token_layer(model) * model.num_layers * tokens_per_step / devices
    elementwise *= ELEMENTWISE_PASSES * (4 / 3 if layout.recompute == "full" else 1)
    if layout.compile or hardware.is_tpu:
        elementwise *= COMPILED_ELEMENTWISE_FRACTION
    return (matmul / (matmul_peak * eff) + attention / (bf16_peak * attn_eff)
            + elementwise / (hardware.memory_bw_tbps * 1e12))


def _elementwise_bytes_per_token_layer(model: ModelSpec) -> float:
    """Activation bytes one token produces in one layer (the sbh-linear terms of Korthikanti's Table 2,
    generalised as in `memory.activation_bytes_per_layer`): the traffic memory-bound kernels move."""
    h = model.hidden_size
    f = model.ffn_hidden_size
    scale = 1
    if model.moe is not None:
        f = model.moe.expert_ffn_hidden_size or f
        scale = model.moe.top_k + model.moe.num_shared_experts
    stored_ffn = 3 if model.activation == "swiglu" else 2
    return 2.0 * (6 * h + 2 * model.head_size * (model.num_heads + model.kv_heads) + stored_ffn * f * scale)


def _collective(kind: str, size_bytes: float, ranks: int, gbps: float) -> float:
    """Ring collective time (formulas.md section 5)."""
    if ranks <= 1 or size_bytes <= 0:
        return 0.0
    factor = 2 * (ranks - 1) / ranks if kind == "all_reduce" else (ranks - 1) / ranks
    return factor * size_bytes / (gbps * 1e9)


def _link(hardware: Hardware, group: int, stride: int) -> float:
    efficiency = TPU_LINK_EFFICIENCY if hardware.is_tpu else LINK_EFFICIENCY
    return hardware.bandwidth_gbps(group, stride) * efficiency


def step_time(model: ModelSpec, counts: ParameterCount, flops: FlopsPerToken, hardware_flops: float,
              layout: Layout, hardware: Hardware, seq_len: int, tokens_per_step: int) -> StepTime:
    """Predicted time of one optimizer step for this layout."""
    compute = compute_time(model, flops, hardware_flops, layout, hardware, seq_len, tokens_per_step)
    m, p, v = layout.grad_accum, layout.pp, layout.vpp
    per_micro = compute / m
    bubble = (p - 1) / v * per_micro if p > 1 else 0.0  # (p-1)/(m v) of the m micro-batches' compute
    layers, moe_layers = stage_layers(model, layout)
    act_dtype = 4 if layout.precision == "fp32" else 2
    tokens_mb = layout.micro_batch * seq_len / layout.cp
    activation = tokens_mb * model.hidden_size * act_dtype

    # TP: 2 all-reduces forward + 2 backward per layer (+2 with full recompute), Megatron; SP swaps
    # each for all-gather + reduce-scatter of the same volume (Korthikanti et al. 2022, sec. 4.2.2).
    tp_count = 4 + (2 if layout.recompute == "full" else 0)
    tp_comm = m * layers * tp_count * _collective("all_reduce", activation, layout.tp, _link(hardware, layout.tp, 1))

    # CP ring attention: cp-1 K/V chunk passes forward, twice that backward (K/V and dK/dV).
    cp_comm = 0.0
    if layout.cp > 1:
        kv_chunk = 2 * tokens_mb * model.kv_heads * model.head_size * act_dtype
        ring = 3 * (layout.cp - 1) * kv_chunk / (_link(hardware, layout.cp, layout.tp) * 1e9)
        attention_per_layer = (hardware_flops - flops.matmul) * tokens_per_step / layout.devices / max(1, layers) / m
        attention_per_layer /= hardware.peak_tflops * 1e12 * ATTENTION_EFFICIENCY * float(
            hardware.accelerator.extra.get("achievable_attention_fraction", DEFAULT_ATTENTION_FRACTION))
        cp_comm = m * layers * max(0.0, ring - attention_per_layer)

    # PP: one activation send forward and one gradient back per micro-batch per chunk boundary.
    pp_comm = 0.0
    if p > 1:
        message = activation / (layout.tp if layout.sequence_parallel else 1)
        link = _link(hardware, p, layout.tp * layout.cp * layout.dp)
        pp_comm = 2 * (m + p - 1) * v * message / (link * 1e9)

    dp_comm = _data_parallel_time(model, counts, layout, hardware, compute, layers)

    # EP: dispatch + combine all-to-all forward and backward per MoE layer (formulas.md section 5).
    ep_comm = 0.0
    if layout.ep > 1 and moe_layers:
        routed = tokens_mb * model.moe.top_k * model.hidden_size * act_dtype
        ep_comm = m * moe_layers * 4 * _collective("all_to_all", routed, layout.ep, _link(hardware, layout.ep, layout.tp))

    optimizer = _optimizer_time(model, counts, layout, hardware)
    return StepTime(compute=compute, bubble=bubble, tp_comm=tp_comm, cp_comm=cp_comm, pp_comm=pp_comm,
                    dp_comm=dp_comm, ep_comm=ep_comm, optimizer=optimizer, tokens_per_step=tokens_per_step,
                    devices=layout.devices, model_flops_per_token=flops.model,
                    hardware_flops_per_token=hardware_flops, peak_tflops=hardware.peak_tflops)


def _data_parallel_time(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                        compute: float, layers: int) -> float:
    """Exposed data-parallel time: gradient sync (DDP all-reduce, ZeRO reduce-scatter + all-gather) or
    FSDP per-micro-batch all-gathers and reduce-scatters (ZeRO paper sec. 7: 3 x vs 2 x volume)."""
    params = stage_params(model, counts, layout, "first" if layout.pp > 1 else "only")
    # Experts reduce over the expert-dp group (dp x cp / ep): same bytes per rank, fewer ranks; the
    # ring factor differs by < 2x, so both are charged on the dense group's ring (slight over-estimate).
    local = params.dense + params.experts
    ranks = layout.shard_degree
    if ranks <= 1 and layout.hsdp_replicas <= 1:
        return 0.0
    link = _link(hardware, ranks, layout.tp)
    grad_bytes = 4.0  # fp32 gradient reduction (Megatron main grads; FSDP2 reduce_dtype fp32 in torchtitan)
    param_bytes = 4.0 if layout.precision == "fp32" else 2.0
    m = layout.grad_accum
    exposed_floor = 1 / max(1, layers)
    if layout.sharded_states >= 3:
        reduce = _collective("reduce_scatter", local * grad_bytes, ranks, link)
        # parallel.grad_sync "last": one reduce-scatter per step, "every": one per micro-batch.
        per_micro = (2 * _collective("all_gather", local * param_bytes, ranks, link)
                     + (reduce / m if layout.grad_sync == "last" else reduce))
        if layout.hsdp_replicas > 1:
            per_micro += _collective("all_reduce", local * grad_bytes / ranks, layout.hsdp_replicas,
                                     _link(hardware, layout.hsdp_replicas, layout.tp * ranks)) / m
        window = compute / m
        return m * max(per_micro - window, per_micro * exposed_floor)
    if layout.sharded_states >= 1:
        comm = (_collective("reduce_scatter", local * grad_bytes, ranks, link)
                + _collective("all_gather", local * param_bytes, ranks, link))
    else:
        comm = _collective("all_reduce", local * grad_bytes, ranks, link)
    window = compute / m * 2 / 3  # backward of the last micro-batch
    return max(comm - window, comm * exposed_floor)


def _optimizer_time(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware) -> float:
    """AdamW update, memory-bound: read and write fp32 master, m, v, read the fp32 grad, write the bf16
    copy: ~36 bytes moved per local (sharded) parameter at HBM bandwidth."""
    params = stage_params(model, counts, layout, "first" if layout.pp > 1 else "only")
    local = params.dense / (layout.shard_degree if layout.sharded_states >= 1 else 1)
    local += params.experts / (max(1, layout.shard_degree // layout.ep) if layout.sharded_states >= 1 else 1)
    return local * 36 / (hardware.memory_bw_tbps * 1e12)
