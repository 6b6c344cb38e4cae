"""Time per optimizer step: compute at an achievable fraction of peak, plus exposed communication.

Overlap rules (stated once, applied everywhere):
- Tensor-parallel and expert-parallel collectives sit on the critical path on GPUs (Megatron default,
  no TP comm overlap): fully exposed. On TPUs XLA runs them as async collectives overlapped with the
  layer's independent compute (MaxText's LIBTPU_INIT_ARGS enable async collective fusion and
  compute/collective overlap): exposed where longer than that compute, and TPU_TP_EXPOSED of it always.
- Context-parallel ring attention passes K/V while the previous chunk is computed: exposed only
  where the transfer is longer than the layer's attention compute.
- Data-parallel gradient sync (DDP / ZeRO-1/2) overlaps the backward pass of the last micro-batch;
  FSDP/ZeRO-3 all-gathers and reduce-scatters overlap each micro-batch's forward and backward.
  In both cases at least one layer's share (1 / layers) stays exposed.
- Pipeline: the bubble (p-1)/(m v) of the compute time (Narayanan et al. 2021, eq. 1 and sec. 2.2.1)
  plus point-to-point sends on the critical path.
- The optimizer step is memory-bound and runs after everything else.
- Overlaps other stacks run, planned only (validate refuses them for specc's runtime, R310/R311):
  `tp_comm_overlap` (Transformer Engine userbuffers: each TP collective pipelined with its GEMM in tp
  chunks, one chunk exposed), `pp_comm_overlap` (Megatron overlap_p2p_comm: only the fill and flush sends
  exposed) and `pp_schedule: dualpipe` (DeepSeek-V3: the bubble of its Table 2, the EP all-to-all and the
  pipeline sends hidden under the paired chunk), all from the NeMo "Communication Overlap" docs and the
  DeepSeek-V3 report sec. 3.2 (docs/formulas.md section 11).

Collective costs are the ring formulas (docs/formulas.md section 5): all-reduce 2(n-1)/n S/BW,
reduce-scatter / all-gather (n-1)/n S/BW, all-to-all (n-1)/n S/BW, plus a latency per ring step
(alpha-beta model; NCCL's tuning model charges a per-hop latency for each of the n-1 ring steps), so
that collectives over hundreds of ranks cost more than their bytes. Overlapped communication is not
free either: its kernels take SMs and HBM bandwidth from the compute they run beside (OVERLAP_COST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from specc.plan import fp8
from specc.plan.layout import Hardware, Layout, peak_tflops
from specc.plan import mla
from specc.plan.params import FlopsPerToken, ParameterCount, recomputed_share
from specc.plan.memory import stage_layers, pipeline_stage_params
from specc.spec import parallel_dims as dims
from specc.spec.model import ModelSpec

# --- efficiency constants ----------------------------------------------------------------------
# MATMUL_EFFICIENCY (gpu, tpu), GEMM_HALF_DIM, GEMM_HALF_TOKENS, ATTENTION_EFFICIENCY, ATTENTION_HALF_SEQ,
# ELEMENTWISE_PASSES, RING_STEP_LATENCY_S and OVERLAP_COST were fitted (`python
# benchmarks/plan_vs_published.py --fit`, coordinate descent over a grid) on all 181 comparable runs of
# benchmarks/data/published_runs.json, each source weighted equally: llm-foundry A100 and H100, Megatron
# SC21, Korthikanti 2022, torchtitan (H100) and MaxText (TPU v5e, v4). `--cv` gives the honest figure:
# each source predicted with constants refitted on the other five. Everything else here is a prior.
DEFAULT_MATMUL_FRACTION = 0.8
"""Best-case GEMM throughput over the dense peak for GPUs whose catalog entry has no measured
`achievable_matmul_fraction` (MAMF; A100 0.859, H100 0.801 in the catalog)."""
TPU_MATMUL_FRACTION = 1.0
"""Best case for TPUs without a catalog figure: the MXUs are systolic arrays fed by the compiler, with
no clock throttling below the rated peak and no SM grid to under-fill, so the whole GEMM loss sits in
MATMUL_EFFICIENCY["tpu"] (MaxText reaches HFU 0.75-0.89 on v5e with full remat: MFU 0.56-0.67 x 4/3)."""
MATMUL_EFFICIENCY = {"gpu": 0.85, "tpu": 0.95, "cpu": 0.5}
"""Fraction of the best-case GEMM rate that a training step's GEMMs sustain at large shapes (kernel
choice, launch gaps, fused epilogues), before the shape factors below. The TPU value is fitted on
MaxText alone (v5e and v4); with TPU_MATMUL_FRACTION = 1 it says large MXU GEMMs run at 95% of peak."""
GEMM_HALF_DIM = 256.0
"""Per-device GEMM width (h / tp) at which shape losses cost a further factor 1 / (1 + 256 / width):
small matrices under-fill the tensor cores (wave quantisation over the SMs, tile edges). GPUs only: a TPU
TensorCore has no SM grid to quantise waves over, only 128 x 128 MXU tiles (How to Scale Your Model,
'TPUs'), which MaxText's widths fill exactly (multiples of 128)."""
GEMM_HALF_TOKENS = 0.0
"""Tokens per micro-batch per device at which GEMM efficiency is halved: 1 / (1 + GEMM_HALF_TOKENS /
tokens) (thin GEMMs along the token dimension under-fill the tiles like a narrow width). The fit on all
sources sets it to 0: no published run here has fewer than 512 tokens per micro-batch."""
DEFAULT_ATTENTION_FRACTION = 0.5
"""FlashAttention throughput over peak where the catalog has no `achievable_attention_fraction`
(A100 0.72, Hopper 0.374: FlashAttention-2's best-case forward on each, see the catalog sources)."""
ATTENTION_EFFICIENCY = 0.5
"""Fraction of that best case a training step's attention sustains at long sequences (causal masking,
kernel launch); scaled by head_dim / (head_dim + 32) for smaller heads and by ATTENTION_HALF_SEQ."""
ATTENTION_HALF_SEQ = 384.0
"""Per-device sequence length (s / cp) at which attention runs at half its long-sequence rate:
factor s / (s + ATTENTION_HALF_SEQ). Fixed per-tile-row work (loading Q, the causal diagonal tile, the
softmax rescale) weighs more on short rows: FlashAttention-2's causal forward on H100 (head dim 128)
runs 191, 260, 298, 319, 333, 335 TFLOP/s at 512 ... 16k tokens (Shah et al. 2024, FlashAttention-3,
forward-speed figure), ~ 345 / (1 + 350 / s). The fit (grid 0-2048) lands on 384."""
ELEMENTWISE_PASSES = 8.0
"""Memory-bound work (norms, activations, residuals, rotary, softmax outside flash): every stored
activation byte is read/written this many times per training pass at HBM bandwidth."""
COMPILED_ELEMENTWISE_FRACTION = 0.5
"""Share of that memory traffic left when a compiler fuses pointwise chains into their neighbours
(XLA on TPU always; torch.compile with `parallel.compile`): a prior, not fitted (torchtitan's
Llama 3 8B gains 16% tokens/s from compile, consistent with halving the eager traffic)."""
LINK_EFFICIENCY = 0.8
"""Achieved bus bandwidth of NCCL/ICI collectives relative to the link figure (nccl-tests on
NVLink4 reach ~360 of 450 GB/s)."""
TPU_LINK_EFFICIENCY = 0.7
"""XLA collectives on ICI rings reach less of the link figure than NCCL on NVSwitch (uncertain)."""
TPU_TP_EXPOSED = 0.3
"""Share of a TPU's tensor-parallel collective time left exposed although XLA runs it asynchronously
under the layer's compute: the collective-matmul decomposition (Wang et al., ASPLOS 2023) cannot hide its
first and last chunk, and a layer's collectives queue on the same ICI links. A prior checked on two
runs: MaxText 128B on v5e-256 at tp 16 (MFU 0.56 vs 0.60-0.67 for the 16-64B models without TP;
predicted -3%) and PaLM 540B on 6144 TPU v4 at 12-way model parallelism (HFU 57.8%, PaLM Table 3; +14%)."""
RING_STEP_LATENCY_S = 4e-6
"""Seconds each of a ring collective's n-1 steps (2(n-1) for all-reduce) costs beyond its bytes: the
per-hop latency of NCCL's tuning model (src/graph/tuning.cc, a few microseconds per network hop for the
LL128/Simple protocols). Paid once per collective: FSDP issues one per layer and pass, DDP/ZeRO one per
gradient bucket (taken as one per layer)."""
OVERLAP_COST = 0.3
"""Share of the data-parallel communication hidden under compute that still slows it down: NCCL kernels
occupy SMs (typically 16-32 channels) and HBM bandwidth while the GEMMs run (on TPUs it stands for HBM
contention by the ICI DMAs; the one constant is fitted on both). With the ring latency this
gives llm-foundry's per-GPU throughput drop from 128 to 512 H100s (measured 4-11%, predicted 1-7%)."""


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


def _matmul_fraction(hardware: Hardware) -> float:
    """The catalog's best-case GEMM fraction (MAMF), else the kind's default."""
    default = TPU_MATMUL_FRACTION if hardware.is_tpu else DEFAULT_MATMUL_FRACTION
    return float(hardware.accelerator.extra.get("achievable_matmul_fraction", default))


def matmul_efficiency(model: ModelSpec, layout: Layout, hardware: Hardware, seq_len: int) -> float:
    """Achievable fraction of peak for the layer GEMMs, from the per-device shapes: the catalog's
    best-case GEMM fraction (MAMF) x a software factor x shape losses for a narrow per-device width
    (h / tp, the dimension tensor parallelism shrinks) and few tokens per micro-batch.

    (A per-GEMM narrowest-dimension variant fitted the same rows equally well but generalised worse
    to the held-out sources, so the one-number width stays.)
    """
    fraction = _matmul_fraction(hardware)
    if _kind(hardware) == "cpu":
        # CPU GEMMs have no tensor-core tiles or waves to under-fill: no shape losses (the tiny spec's
        # 64-wide model sustains ~35% of one core's sgemm peak in training, measured 2026-11-23).
        return fraction * MATMUL_EFFICIENCY["cpu"]
    width = model.hidden_size / layout.tp
    tokens = layout.micro_batch * dims.local_seq_len(seq_len, layout.cp)
    half_dim = 0.0 if hardware.is_tpu else GEMM_HALF_DIM
    return (fraction * MATMUL_EFFICIENCY[_kind(hardware)] / (1 + half_dim / width)
            / (1 + GEMM_HALF_TOKENS / tokens))


RUNTIME_ATTENTION_KERNEL = "flash2"
"""The kernel `attention_kernel: auto` (and `attention: flash`) runs on a GPU: torch's SDPA tries its
backends in the order `torch._C._get_sdp_priority_order()` gives, flash (FlashAttention-2), memory-efficient,
math, cuDNN last (torch 2.13, the pinned release; cuDNN was moved last after 2.5.0, pytorch PR 138587)."""


def attention_kernel(model: ModelSpec, layout: Layout) -> str:
    """The attention kernel the step runs: `model.attention_kernel`, `auto` resolved to the runtime's.
    Under masks (ALiBi, sliding windows, context parallelism) specc's runtime leaves the kernel to SDPA,
    and validate refuses a named kernel there (R312); a named kernel under context parallelism is what
    Transformer Engine runs on each ring step (its `AttnFuncWithCPAndKVP2P` calls the fused cuDNN
    attention per K/V chunk), so the planner charges it for the stacks that do."""
    return RUNTIME_ATTENTION_KERNEL if model.attention_kernel == "auto" else model.attention_kernel


def attention_kernel_fraction(hardware: Hardware, kernel: str) -> float:
    """Best-case attention throughput over the bf16 peak for `kernel`: the catalog's
    `attention_kernel_fractions[kernel]` (Hopper: cuDNN 0.601, FlashAttention-3 0.655, FA3 paper's forward
    figure, head dim 128, 16k tokens), else its FlashAttention-2 figure `achievable_attention_fraction`:
    no speed-up is claimed where no measurement is catalogued."""
    extra = hardware.accelerator.extra
    fa2 = float(extra.get("achievable_attention_fraction", DEFAULT_ATTENTION_FRACTION))
    return float(extra.get("attention_kernel_fractions", {}).get(kernel, fa2))


def attention_efficiency(model: ModelSpec, layout: Layout, hardware: Hardware, seq_len: int) -> float:
    """Achievable fraction of the bf16 peak for the attention core: the kernel's best case
    (`attention_kernel_fraction`) x ATTENTION_EFFICIENCY x a head-size factor x the sequence-length
    factor (ATTENTION_HALF_SEQ)."""
    fraction = attention_kernel_fraction(hardware, attention_kernel(model, layout))
    head = mla.qk_head_dim(model)
    row = dims.local_seq_len(seq_len, layout.cp)
    # The per-tile-row overheads are the GPU/TPU kernels'; a CPU has no tiles to under-fill.
    half_seq = 0.0 if _kind(hardware) == "cpu" else ATTENTION_HALF_SEQ
    return fraction * ATTENTION_EFFICIENCY * head / (head + 32) * row / (row + half_seq)


def compute_time(model: ModelSpec, flops: FlopsPerToken, hardware_flops: float, layout: Layout, hardware: Hardware, seq_len: int, tokens_per_step: int) -> float:
    """Seconds of arithmetic per step on one device: GEMMs, attention and memory-bound elementwise work."""
    return sum(compute_parts(model, flops, hardware_flops, layout, hardware, seq_len, tokens_per_step).values())


def compute_parts(model: ModelSpec, flops: FlopsPerToken, hardware_flops: float, layout: Layout, hardware: Hardware, seq_len: int, tokens_per_step: int) -> dict[str, float]:
    """`compute_time` by part (seconds per step on one device): `matmul` (GEMMs, fp8 included), `attention`
    (the attention core), `elementwise` (memory-bound norms, activations, residuals), `fp8_casts` and
    `moe_permutation` (memory-bound too). The benchmark prints it (`plan_vs_published.py --breakdown`)."""
    devices = layout.devices
    recompute_factor = hardware_flops / flops.executed
    bf16_peak = peak_tflops(hardware.accelerator, "bf16" if layout.precision == "fp8" else layout.precision) * 1e12
    matmul = flops.matmul * recompute_factor * tokens_per_step / devices
    attention = (hardware_flops - flops.matmul * recompute_factor) * tokens_per_step / devices
    # specc's runtime replicates MoE FFNs over tp: every tp rank computes the experts' FLOPs whole
    matmul += _expert_flops_per_token(model) * recompute_factor * tokens_per_step / devices * (layout.tp - 1)
    # ...and MLA's down-projections (replicated over tp, `mla.mla_matrices`)
    matmul += mla.replicated_matmul_flops_per_token(model) * recompute_factor * tokens_per_step / devices * (layout.tp - 1)
    # ...and runs the routed experts over capacity-padded buffers (moe.py): capacity_factor x their FLOPs
    routed = _routed_flops_per_token(model) * recompute_factor * tokens_per_step / devices * layout.tp
    matmul += (_capacity_factor(model) - 1) * routed
    eff = matmul_efficiency(model, layout, hardware, seq_len)
    attn_eff = attention_efficiency(model, layout, hardware, seq_len)
    # Each device runs L/pp layers on B/dp sequences of s/cp tokens, 1/tp of each tensor.
    elementwise = _elementwise_bytes_per_token_layer(model) * (model.num_layers + model.mtp_depth) * tokens_per_step / devices
    elementwise *= ELEMENTWISE_PASSES * (1 + _recomputed_share(model, layout) / 3)
    matmul_s = matmul / (hardware.peak_tflops * 1e12 * eff)
    # grouped expert GEMMs on few rows per expert waste part of each 128-row tile (tile quantisation)
    matmul_s += (_capacity_factor(model) * routed / (hardware.peak_tflops * 1e12 * eff)
                 * (1 / _expert_tile_fill(model, layout, seq_len) - 1))
    if layout.precision == "fp8":
        converted = fp8.converted_flops_per_token(model, layout.tp) * recompute_factor * tokens_per_step / devices
        if layout.fp8_recipe in fp8.TRANSFORMER_ENGINE_RECIPES:  # TEGroupedMLP: routed experts in fp8 too
            converted += _capacity_factor(model) * routed
        converted = min(matmul, converted)
        matmul_s = _fp8_matmul_time(layout, hardware, matmul, converted, bf16_peak * eff)
        # casts of every converted Linear: local shapes, on each device's tokens (B/dp x s/cp) over L/pp layers
        tokens_mb = layout.micro_batch * dims.local_seq_len(seq_len, layout.cp)
        casts = (fp8.cast_bytes_per_token(model, layout.tp, tokens_mb, _fp8_all_gather(layout), layout.fp8_recipe,
                                          layout.grad_accum) * tokens_per_step * layout.tp / devices)
        local_experts = model.moe.num_experts / layout.ep if model.moe is not None else 0.0
        casts += (fp8.expert_cast_bytes_per_token(model, layout.fp8_recipe, local_experts, tokens_mb, layout.grad_accum)
                  * tokens_per_step / devices * layout.tp)
    else:
        casts = 0.0
    fused = COMPILED_ELEMENTWISE_FRACTION if layout.compile or hardware.is_tpu else 1.0
    # token permutation (dispatch into the capacity buffer, gather, weight, index_add back): not fused
    permutation = _permutation_bytes_per_token(model) * tokens_per_step * layout.tp / devices
    hbm = hardware.memory_bw_tbps * 1e12
    return {"matmul": matmul_s, "attention": attention / (bf16_peak * attn_eff), "elementwise": elementwise * fused / hbm,
            "fp8_casts": casts * fused / hbm, "moe_permutation": permutation / hbm}


def _fp8_matmul_time(layout: Layout, hardware: Hardware, matmul: float, converted: float, bf16_rate: float) -> float:
    """Seconds of GEMMs under `precision: fp8` (`specc.plan.fp8`): the `converted` FLOPs (block
    Linears) at the recipe's fp8 rate, the rest (output head, routers, experts) at `bf16_rate`."""
    bf16_peak = peak_tflops(hardware.accelerator, "bf16")
    speedup = fp8.gemm_speedup(hardware.peak_tflops, bf16_peak, layout.fp8_recipe)
    return (matmul - converted) / bf16_rate + converted / (bf16_rate * speedup)


def _fp8_all_gather(layout: Layout) -> bool:
    """Tensorwise fp8 gathers weights in fp8 wherever FSDP2 gathers them (more than one data- or
    context-parallel rank; `precision.uses_float8_all_gather` in the runtime)."""
    return layout.precision == "fp8" and layout.fp8_recipe == "tensorwise" and layout.dp * layout.cp > 1


def _recomputed_share(model: ModelSpec, layout: Layout) -> float:
    """Share of the blocks full recompute runs forward again (`params.recomputed_share`)."""
    return recomputed_share(model.num_layers, layout.recompute, layout.recompute_every)


def _expert_flops_per_token(model: ModelSpec) -> float:
    """Training matmul FLOPs of the routed and shared experts per token: 6 per active expert weight
    (Kaplan et al. 2020, eq. 2.2), top_k routed + shared experts in every MoE layer."""
    if model.moe is None:
        return 0.0
    moe = model.moe
    width = moe.expert_ffn_hidden_size or model.ffn_hidden_size
    matrices = 3 if model.activation == "swiglu" else 2
    moe_layers = len(dims.moe_layer_ids(model))
    return 6.0 * moe_layers * (moe.top_k + moe.num_shared_experts) * matrices * model.hidden_size * width


def _routed_flops_per_token(model: ModelSpec) -> float:
    """Training matmul FLOPs of the routed experts alone per token (top_k of them in every MoE layer)."""
    if model.moe is None:
        return 0.0
    moe = model.moe
    return _expert_flops_per_token(model) * moe.top_k / (moe.top_k + moe.num_shared_experts)


def _capacity_factor(model: ModelSpec) -> float:
    """Rows the routed experts compute per routed token: specc's runtime fills fixed buffers of
    `capacity = ceil(capacity_factor x tokens x top_k / num_experts)` slots per expert, empty slots
    included (specc/runtime/train/moe.py; GShard sec. 2.2), so its expert GEMMs cost capacity_factor x
    the routed FLOPs; above capacity tokens are dropped, so a factor below 1 computes less."""
    return float(model.moe.capacity_factor) if model.moe is not None else 1.0


GEMM_TILE_ROWS = 128
"""Rows (tokens) per output tile of the tensor-core GEMM kernels: cuBLAS/CUTLASS Hopper and Ampere bf16
kernels tile M in 128 (or 64 x 2) rows (NVIDIA Deep Learning Performance Guide, 'Matrix Multiplication
Background', tile quantization); an expert with m rows computes ceil(m / 128) full tiles."""


def _expert_tile_fill(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Useful share of the tiles an expert's GEMM computes: m / (ceil(m / 128) x 128), m = the rows one
    local expert receives per micro-batch, ep x capacity (each of the ep ranks sends it a full
    capacity buffer, specc/runtime/train/moe.py `_run_experts`). 1 for dense models and on TPUs/CPUs."""
    if model.moe is None:
        return 1.0
    moe = model.moe
    tokens = layout.micro_batch * dims.local_seq_len(seq_len, layout.cp)
    rows = layout.ep * math.ceil(moe.capacity_factor * tokens * moe.top_k / moe.num_experts)
    return rows / (math.ceil(rows / GEMM_TILE_ROWS) * GEMM_TILE_ROWS)


MOE_PERMUTE_PASSES = 30.0
"""Bytes moved per routed token-row of width h per training pass, in units of 2h (bf16): the forward
of specc's MoE (moe.py) reads and writes each routed row about 10 times (zero-fill and index_copy into
the capacity buffer, gather of the expert outputs, the routing-weight multiply, index_add into the
output), and the backward moves the gradients of the same gathers and scatters twice over
(input and output gradients): 30 passes. Counted from the code, not fitted."""


def _permutation_bytes_per_token(model: ModelSpec) -> float:
    """HBM bytes of MoE token permutation/unpermutation per token over all MoE layers (memory-bound)."""
    if model.moe is None:
        return 0.0
    rows = model.moe.top_k * max(1.0, float(model.moe.capacity_factor))
    return MOE_PERMUTE_PASSES * 2.0 * model.hidden_size * rows * len(dims.moe_layer_ids(model))


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
    attention, latents = mla.attention_activation_elements(model, False)
    return 2.0 * (6 * h + attention + latents + stored_ffn * f * scale)


def _collective(kind: str, size_bytes: float, ranks: int, hardware: Hardware, stride: int, count: int = 1) -> float:
    """Ring collective over `ranks` placed `stride` apart (docs/formulas.md section 5), `size_bytes` split over
    `count` collectives: bytes at the bus bandwidth, plus RING_STEP_LATENCY_S per ring step of each
    collective when the ring leaves the fast domain (a ring steps at the pace of its slowest hop; NVLink
    and ICI hops cost well under a microsecond and are left out)."""
    if ranks <= 1 or size_bytes <= 0:
        return 0.0
    steps = 2 * (ranks - 1) if kind == "all_reduce" else ranks - 1
    latency = RING_STEP_LATENCY_S if ranks * stride > hardware.fast_domain else 0.0
    return steps / ranks * size_bytes / (_link(hardware, ranks, stride) * 1e9) + count * steps * latency


def _link(hardware: Hardware, group: int, stride: int) -> float:
    efficiency = TPU_LINK_EFFICIENCY if hardware.is_tpu else LINK_EFFICIENCY
    return hardware.bandwidth_gbps(group, stride) * efficiency


def step_time(model: ModelSpec, counts: ParameterCount, flops: FlopsPerToken, hardware_flops: float,
              layout: Layout, hardware: Hardware, seq_len: int, tokens_per_step: int) -> StepTime:
    """Predicted time of one optimizer step for this layout (a `cluster.profile` scales compute, bubble and
    optimizer by its compute_scale, the exposed communication by its communication_scale)."""
    compute = compute_time(model, flops, hardware_flops, layout, hardware, seq_len, tokens_per_step) * hardware.compute_scale
    m, p, v = layout.grad_accum, layout.pp, layout.vpp
    per_micro = compute / m
    bubble = pipeline_bubble(layout, per_micro)
    layers, moe_layers = stage_layers(model, layout)
    act_dtype = 4 if layout.precision == "fp32" else 2
    tokens_mb = layout.micro_batch * dims.local_seq_len(seq_len, layout.cp)
    activation = tokens_mb * model.hidden_size * act_dtype

    # TP: 2 all-reduces forward + 2 backward per layer (+2 with full recompute), Megatron; SP swaps
    # each for all-gather + reduce-scatter of the same volume (Korthikanti et al. 2022, sec. 4.2.2).
    tp_count = 4 + 2 * _recomputed_share(model, layout)
    tp_comm = m * layers * tp_count * _collective("all_reduce", activation, layout.tp, hardware, 1)
    if hardware.is_tpu:  # XLA async collectives run under the layer's compute (module docstring)
        tp_comm = max(TPU_TP_EXPOSED * tp_comm, tp_comm - compute)
    elif layout.tp_comm_overlap and layout.tp > 1:
        # Transformer Engine userbuffers: each collective split into tp chunks pipelined with the GEMM's
        # chunks; one chunk stays exposed (NeMo docs, 'Communication Overlap', tensor-parallel section)
        tp_comm = _exposed(tp_comm, compute, 1 / layout.tp)

    # CP ring attention: cp-1 K/V chunk passes forward, twice that backward (K/V and dK/dV).
    cp_comm = 0.0
    if layout.cp > 1:
        # each tp rank holds and passes only its kv_heads / tp heads (Megatron-Core CP runs inside each
        # TP group; with fewer KV heads than tp ranks each rank keeps one replicated head)
        # (MLA passes the up-projected per-head K and V: d_qk + d_v per head, Megatron-Core's MLA under CP)
        kv_heads = max(1.0, mla.kv_heads_computed(model) / layout.tp)
        kv_chunk = tokens_mb * kv_heads * (mla.qk_head_dim(model) + mla.v_head_dim(model)) * act_dtype
        ring = 3 * (layout.cp - 1) * kv_chunk / (_link(hardware, layout.cp, layout.tp) * 1e9)
        # the hiding window is the layer's attention compute, which runs at the bf16 rate even under
        # fp8 (only the blocks' Linears are converted, `specc.plan.fp8`)
        bf16_peak = peak_tflops(hardware.accelerator, "bf16" if layout.precision == "fp8" else layout.precision)
        attention_per_layer = (hardware_flops - flops.matmul) * tokens_per_step / layout.devices / max(1, layers) / m
        attention_per_layer /= bf16_peak * 1e12 * attention_efficiency(model, layout, hardware, seq_len)
        cp_comm = m * layers * max(0.0, ring - attention_per_layer)

    # PP: one activation send forward and one gradient back per micro-batch per chunk boundary.
    pp_comm = 0.0
    if p > 1:
        message = activation / (layout.tp if layout.sequence_parallel else 1)
        link = _link(hardware, p, layout.tp * layout.cp * layout.dp)
        pp_comm = 2 * (m + p - 1) * v * message / (link * 1e9)
        if layout.pp_comm_overlap and v > 1 or layout.pp_schedule == "dualpipe":
            # only the fill and flush sends stay on the critical path: the first micro-batch's forward
            # through all p v chunks and the last one's backward (Megatron overlap_p2p_comm, NeMo docs
            # 'Pipeline-parallel Communication Overlap'; DualPipe hides them too, DeepSeek-V3 sec. 3.2.1)
            fill_flush = 2 * (p * v - 1) * message / (link * 1e9)
            pp_comm = fill_flush + OVERLAP_COST * max(0.0, pp_comm - fill_flush)

    dp_comm = _data_parallel_time(model, counts, layout, hardware, compute, layers)

    # EP: dispatch + combine all-to-all forward and backward per MoE layer (docs/formulas.md section 5).
    ep_comm = 0.0
    if layout.ep > 1 and moe_layers:
        # the dispatch buffer is num_experts x capacity slots whatever the routing (moe.py): capacity_factor
        # x top_k rows per token cross the wire, empty slots included
        routed = tokens_mb * model.moe.top_k * _capacity_factor(model) * model.hidden_size * act_dtype
        ep_comm = m * moe_layers * 4 * _collective("all_to_all", routed, layout.ep, hardware, layout.tp)
        if layout.pp_schedule == "dualpipe":
            # each forward chunk runs beside a backward chunk of another micro-batch, so one's dispatch
            # and combine run under the other's compute (DeepSeek-V3 sec. 3.2.1, 'computation-communication
            # overlap'): exposed only beyond the compute, plus OVERLAP_COST of it (the SMs it occupies)
            ep_comm = _exposed(ep_comm, compute, 0.0)

    optimizer = _optimizer_time(model, counts, layout, hardware) * hardware.compute_scale
    c = hardware.comm_scale
    return StepTime(compute=compute, bubble=bubble, tp_comm=tp_comm * c, cp_comm=cp_comm * c, pp_comm=pp_comm * c,
                    dp_comm=dp_comm * c, ep_comm=ep_comm * c, optimizer=optimizer, tokens_per_step=tokens_per_step,
                    devices=layout.devices, model_flops_per_token=flops.model,
                    hardware_flops_per_token=hardware_flops, peak_tflops=hardware.peak_tflops)


def pipeline_bubble(layout: Layout, per_micro: float) -> float:
    """Idle time of a pipeline stage per step, from one micro-batch's compute on the stage (`per_micro`,
    forward F = 1/3 and backward B = 2/3 of it, its weight-gradient half W = 1/3).

    1F1B and GPipe: (p - 1) (F + B); interleaved with v chunks: (p - 1)(F + B) / v (Narayanan et al.
    2021, eq. 1 and sec. 2.2.1). DualPipe: (p/2 - 1)(F&B + B - 3W) (DeepSeek-V3 report, Table 2), a
    paired forward-backward chunk F&B taking F + B: (p/2 - 1) x 2/3 of a micro-batch."""
    p, v = layout.pp, layout.vpp
    if p <= 1:
        return 0.0
    if layout.pp_schedule == "dualpipe":
        return max(0.0, p / 2 - 1) * (per_micro + per_micro * 2 / 3 - 3 * per_micro / 3)
    return (p - 1) / v * per_micro


def _data_parallel_time(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                        compute: float, layers: int) -> float:
    """Exposed data-parallel time: gradient sync (DDP all-reduce, ZeRO reduce-scatter + all-gather) or
    FSDP per-micro-batch all-gathers and reduce-scatters (ZeRO paper sec. 7: 3 x vs 2 x volume)."""
    params = pipeline_stage_params(model, counts, layout, "first" if layout.pp > 1 else "only")
    # Experts reduce over the expert-dp group (dp x cp / ep): same bytes per rank, fewer ranks; the
    # ring factor differs by < 2x, so both are charged on the dense group's ring (slight over-estimate).
    local = params.dense + params.experts
    ranks = layout.shard_degree
    if ranks <= 1 and layout.hsdp_replicas <= 1:
        return 0.0
    grad_bytes = 4.0  # fp32 gradient reduction (Megatron main grads; FSDP2 reduce_dtype fp32 in torchtitan)
    param_bytes = 4.0 if layout.precision == "fp32" else 2.0
    scales = 0.0
    if _fp8_all_gather(layout):
        # converted weights are gathered as 1-byte fp8; their scales come from one all-reduce of every
        # weight's amax after the optimizer step (torchao precompute_float8_dynamic_scale_for_fsdp), exposed
        stage_layers_, stage_moe = stage_layers(model, layout)
        converted = fp8.converted_params(model, layout.tp, stage_layers_, stage_moe)
        param_bytes -= min(1.0, converted / local) if local else 0.0
        linears = stage_layers_ * len(fp8.converted_linears(model, False, layout.tp))
        scales = _collective("all_reduce", 4.0 * linears, ranks, hardware, layout.tp)
    m = layout.grad_accum
    exposed_floor = 1 / max(1, layers)
    if layout.sharded_states >= 3:
        reduce = _collective("reduce_scatter", local * grad_bytes, ranks, hardware, layout.tp, layers)
        # parallel.grad_sync "last": one reduce-scatter per step, "every": one per micro-batch.
        per_micro = (2 * _collective("all_gather", local * param_bytes, ranks, hardware, layout.tp, layers)
                     + (reduce / m if layout.grad_sync == "last" else reduce))
        if layout.hsdp_replicas > 1:
            per_micro += _collective("all_reduce", local * grad_bytes / ranks, layout.hsdp_replicas, hardware,
                                     layout.tp * ranks, layers) / m
        return m * _exposed(per_micro, compute / m, exposed_floor) + scales
    backward = compute / m * 2 / 3  # window of the gradient sync: the backward of the last micro-batch
    if layout.sharded_states >= 1:
        # The updated weights' all-gather runs under the next step's first forward, layer by layer as it
        # needs them (FSDP2's forward prefetch in specc's runtime; Megatron's overlap_param_gather): it
        # has a window of its own, the forward of one micro-batch.
        reduce = _collective("reduce_scatter", local * grad_bytes, ranks, hardware, layout.tp, layers)
        gather = _collective("all_gather", local * param_bytes, ranks, hardware, layout.tp, layers)
        return (_chunked_exposed(reduce, backward, layers, layout) + _chunked_exposed(gather, compute / m / 3, layers, layout)
                + scales)
    comm = _collective("all_reduce", local * grad_bytes, ranks, hardware, layout.tp, layers)
    return _chunked_exposed(comm, backward, layers, layout) + scales


def _chunked_exposed(comm: float, window: float, layers: int, layout: Layout) -> float:
    """Exposed time of a stage's once-per-step data-parallel collective `comm` whose window is `window`
    (one micro-batch's backward for the gradient sync, forward for the weight gather).

    Without virtual stages: `_exposed(comm, window, 1 / layers)`, one layer's share exposed at least.
    Under the interleaved schedule each of the v chunks syncs when its own last backward ends (Megatron-
    Core gives each model chunk its own buffers, bucketing only chunk 0, `disable_bucketing=(model_chunk_idx
    > 0)`; NeMo docs, 'Communication Overlap': with pipelining 'the granularity of DP communication becomes
    the Transformer layers per virtual pipeline stage'), and the last group of min(p, m) micro-batches
    runs chunk by chunk (Narayanan et al. 2021, fig. 4): chunks v-1 ... 1 (share (v-1)/v) hide under the
    (v-1)/v of that group's work still to come, chunk 0 (share 1/v) under its own micro-batch as without
    pipelining. The weight gather mirrors it at the start of the next step."""
    v = layout.vpp if layout.pp > 1 and layout.pp_schedule == "interleaved" else 1
    first = _exposed(comm / v, window / v, min(1.0, v / max(1, layers)))
    if v == 1:
        return first
    group = min(layout.pp, layout.grad_accum)
    return first + _exposed(comm * (v - 1) / v, window * group * (v - 1) / v, 0.0)


def _exposed(comm: float, window: float, floor: float) -> float:
    """Time `comm` adds when overlapped with `window` of compute: the part longer than the window (at
    least `floor` of it), plus OVERLAP_COST of the hidden part (module docstring)."""
    exposed = max(comm - window, comm * floor)
    return exposed + OVERLAP_COST * (comm - exposed)


def _optimizer_time(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware) -> float:
    """AdamW update, memory-bound: read and write fp32 master, m, v, read the fp32 grad, write the bf16
    copy: ~36 bytes moved per local (sharded) parameter at HBM bandwidth."""
    params = pipeline_stage_params(model, counts, layout, "first" if layout.pp > 1 else "only")
    local = params.dense / (layout.shard_degree if layout.sharded_states >= 1 else 1)
    local += params.experts / (max(1, layout.shard_degree // layout.ep) if layout.sharded_states >= 1 else 1)
    return local * 36 / (hardware.memory_bw_tbps * 1e12)
