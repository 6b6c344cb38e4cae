"""Memory per device, broken down: model states, activations, buffers, reserve.

Every term cites its source. Sizes are bytes until `MemoryBreakdown` converts to GiB.
The most-loaded pipeline stage decides whether a layout fits: the first stage holds the
embedding and the most in-flight micro-batches, the last the output head and the logits;
both are computed and the larger is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from specc.plan import tpu
from specc.plan.layout import Hardware, Layout
from specc.plan.params import ParameterCount
from specc.spec.model import ModelSpec

GIB = 2**30

GPU_CONTEXT_GIB = 0.75
"""CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator statistics (uncertain, ~0.5-1 GiB
on Hopper with NCCL; not fitted)."""

RMSNORM_EAGER_BYTES = 6.0
"""Bytes per element `torch.nn.RMSNorm` keeps beyond its 16-bit input in eager mode (its fp32
intermediates): measured with FSDPMemTracker on specc's runtime model (benchmarks/plan_vs_tracker.py:
+12sbh per layer without recompute; LayerNorm's fused kernel keeps none). With `parallel.compile` the
norm is fused and keeps none (TPU plans keep the term: a conservative choice, unmeasured)."""

EAGER_SOFTMAX_BYTES = 6.0
"""Bytes per attention-score element specc's eager attention keeps without dropout: the fp32 softmax
output and its 16-bit cast (`scores.float().softmax(-1).to(q.dtype)`), measured with FSDPMemTracker.
With dropout, Korthikanti's 5 (fp16 softmax 2 + mask 1 + dropout output 2) is used."""

GPU_FRAGMENTATION = 0.05
"""Caching-allocator fragmentation on top of live tensors: Megatron's theoretical estimator adds 5%
(`compute_activation_memory` overhead factor, formulas.md section 4); applied to the whole allocation."""


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-device memory of the most-loaded stage, in bytes, by component."""

    params: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    fsdp_buffers: float
    reserve: float
    capacity_gib: float
    stage: str
    """`first`, `last` or `only` (pp = 1): which pipeline stage these figures are for."""

    @property
    def other(self) -> float:
        return self.logits + self.fsdp_buffers + self.reserve

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.other

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.capacity_gib

    def contract(self) -> dict:
        """The plan contract's `memory` object, plus a finer `detail_gib`."""
        return {
            "per_device_gib": _round(self.total_gib),
            "capacity_gib": _round(self.capacity_gib),
            "fits": self.fits,
            "stage": self.stage,
            "breakdown_gib": {
                "params": _round(self.params / GIB), "grads": _round(self.grads / GIB),
                "optimizer": _round(self.optimizer / GIB), "activations": _round(self.activations / GIB),
                "other": _round(self.other / GIB),
            },
            "detail_gib": {"logits": _round(self.logits / GIB), "fsdp_buffers": _round(self.fsdp_buffers / GIB),
                           "reserve": _round(self.reserve / GIB)},
        }


def _round(value: float) -> float:
    return round(value, 4)


@dataclass(frozen=True)
class StageParams:
    """Parameters one device holds for one pipeline stage, split by how they are sharded."""

    dense: float
    """Parameters replicated over dp (already divided by tp where tensor-parallel)."""
    experts: float
    """Routed-expert parameters (divided by ep and tp); sharded over the expert-dp group."""
    layer: float
    """One transformer layer's parameters on this device (FSDP gathers one at a time)."""
    root: float = 0.0
    """Embedding, final norm and head on this device: FSDP's root unit, kept gathered from forward
    to backward (FSDP2 does not reshard the root after forward)."""


def stage_layers(model: ModelSpec, layout: Layout) -> tuple[int, int]:
    """(layers, MoE layers) on the most-loaded stage: ceil(L / pp) (Megatron: 'most loaded
    stage holds 1/p of the layers', formulas.md section 1; uneven splits round up)."""
    layers = math.ceil(model.num_layers / layout.pp)
    moe = math.ceil(_moe_layers(model) / layout.pp) if model.moe else 0
    return layers, min(moe, layers)


def _moe_layers(model: ModelSpec) -> int:
    freq = model.moe.layer_frequency
    return sum(1 for i in range(model.num_layers) if i % freq == freq - 1)


def stage_params(model: ModelSpec, counts: ParameterCount, layout: Layout, stage: str) -> StageParams:
    """Per-device parameters: tensor-parallel matrices / tp (norms and router replicated), experts
    / (ep x tp), embedding on the first stage and head on the last (Megatron theoretical memory)."""
    tp = layout.tp
    layers, moe_layers = stage_layers(model, layout)
    dense_layers = layers - moe_layers
    shared = counts.shared_experts * counts.expert_ffn
    body = layers * (counts.attention_per_layer / tp + counts.norms_per_layer)
    body += dense_layers * counts.dense_ffn_per_layer / tp
    body += moe_layers * (counts.router_per_layer + shared / tp)
    experts = moe_layers * counts.routed_experts * counts.expert_ffn / (layout.ep * tp)
    root = 0.0
    if stage in ("first", "only"):
        root += (counts.token_embedding + counts.positions) / tp
    if stage in ("last", "only"):
        head = counts.output_head or (counts.token_embedding if stage == "last" else 0)
        root += counts.final_norm + head / tp
    body += root
    layer = counts.attention_per_layer / tp + counts.norms_per_layer + max(
        counts.dense_ffn_per_layer / tp if dense_layers else 0,
        (counts.router_per_layer + shared / tp + counts.routed_experts * counts.expert_ffn / (layout.ep * tp))
        if moe_layers else 0)
    return StageParams(dense=body, experts=experts, layer=layer, root=root)


def state_bytes(layout: Layout) -> tuple[float, float, float]:
    """Bytes per parameter for (weights, gradients, optimizer) before sharding.

    Mixed precision, Megatron convention: bf16 weights 2 + fp32 main grads 4 + fp32 master and Adam
    m, v 12 = 18 B/param (Megatron dist_optimizer.md table; formulas.md section 3, checked against
    Korthikanti Fig. 1). FSDP2 (torchtitan MixedPrecisionPolicy): the sharded parameter *is* the fp32
    master: 4 + 4 + 8 = 16. fp32 training: 4 + 4 + 8.
    """
    if layout.precision == "fp32" or layout.fsdp:
        return 4.0, 4.0, 8.0
    return 2.0, 4.0, 12.0


def model_state_memory(params: StageParams, layout: Layout) -> tuple[float, float, float]:
    """(weights, grads, optimizer) bytes after ZeRO sharding (Rajbhandari et al. 2020, sec. 5):
    stage 1 shards the optimizer, 2 also gradients, 3/FSDP also weights, over dp x cp
    (HSDP: within a replica group); experts over the expert-dp group (dp x cp / ep)."""
    w, g, o = state_bytes(layout)
    stage = layout.sharded_states
    shard = layout.shard_degree
    expert_shard = max(1, shard // layout.ep)
    weights = grads = optimizer = 0.0
    for count, degree in ((params.dense, shard), (params.experts, expert_shard)):
        weights += count * w / (degree if stage >= 3 else 1)
        grads += count * g / (degree if stage >= 2 else 1)
        optimizer += count * o / (degree if stage >= 1 else 1)
    return weights, grads, optimizer


def activation_bytes_per_layer(model: ModelSpec, layout: Layout, seq_len: int, moe_layer: bool) -> float:
    """Activations one layer keeps for backward for one micro-batch, 16-bit (Korthikanti et al. 2022,
    sec. 4.1 / Table 2), generalised to GQA, head_dim, SwiGLU and MoE.

    Outside the tensor-parallel region (divided by tp only with sequence parallelism): two norm inputs
    4sbh, attention input 2sbh, MLP input 2sbh, two residual dropout masks 2sbh (if dropout) = 10sbh.
    Inside (divided by tp): Q, K, V and the output-projection input 2sb(2a + 2g)d; FFN 2sbf per stored
    tensor (gelu/relu: 2; SwiGLU in torch eager, as specc's runtime and torchtitan run it: gate, up,
    silu(gate) and their product = 4); attention scores 5as^2b with dropout (Korthikanti), 6as^2b
    without (specc's fp32 softmax) only for eager attention without recompute (flash/sdpa never
    materialise them; they keep an fp32 log-sum-exp, 4asb); RMSNorm's eager fp32 intermediates 12sbh.
    With f = 4h, MHA, gelu, dropout this is 34sbh + 5as^2b, Korthikanti's Table 2 first row.

    Selective recompute: with eager attention, Korthikanti's (the score terms are recomputed); with
    flash/sdpa, specc's runtime policy (`specc/runtime/train/parallelize.py` `_save_matmuls_policy`):
    matmul and attention outputs are kept, pointwise ops recomputed from them and the block input.
    """
    s = seq_len / layout.cp
    b = layout.micro_batch
    h, a, g, d = model.hidden_size, model.num_heads, model.kv_heads, model.head_size
    tp = layout.tp
    dropout = model.dropout > 0
    width, ffn_scale, dispatched = model.ffn_hidden_size, 1.0, 0.0
    if moe_layer:
        moe = model.moe
        width = moe.expert_ffn_hidden_size or model.ffn_hidden_size
        ffn_scale = moe.top_k * moe.capacity_factor + moe.num_shared_experts
        dispatched = 2 * s * b * h * moe.top_k  # tokens permuted to their experts
    matmul_saving = layout.recompute == "selective" and model.attention != "eager"
    if matmul_saving:
        # Block input 2sbh; Q, K, V, attention output 2sbd(2a + 2g); o-proj and w2 outputs 4sbh;
        # FFN matmul outputs (w1, w3 for SwiGLU): 2sbf each. Norm outputs and activations recomputed.
        outside = 6 * s * b * h
        attention = 2 * s * b * d * (2 * a + 2 * g)
        ffn = ffn_scale * 2 * s * b * width * (2 if model.activation == "swiglu" else 1) + dispatched
    else:
        outside = s * b * h * (8 + (2 if dropout else 0))
        if model.norm == "rmsnorm" and layout.recompute == "none" and not layout.compile:
            outside += 2 * RMSNORM_EAGER_BYTES * s * b * h
        attention = 2 * s * b * d * (2 * a + 2 * g)
        stored_ffn = 4 if model.activation == "swiglu" else 2
        ffn = ffn_scale * 2 * s * b * width * stored_ffn + dispatched
    if model.attention != "eager":
        scores = 4 * a * s * b  # flash/sdpa: fp32 log-sum-exp per query and head
    elif layout.recompute == "none":
        scores = a * s * b * seq_len * (5 if dropout else EAGER_SOFTMAX_BYTES)
    else:
        scores = 0.0  # eager core attention recomputed (selective): nothing kept
    inside = (attention + ffn + scores) / tp
    if layout.sequence_parallel:
        outside /= tp
    return outside + inside


def _layer_input_bytes(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Full recompute keeps only each layer's input, 2sbh (/t with sequence parallelism)."""
    s = seq_len / layout.cp
    value = 2 * s * layout.micro_batch * model.hidden_size
    return value / layout.tp if layout.sequence_parallel else value


def in_flight_micro_batches(layout: Layout, stage: str) -> float:
    """Micro-batches whose activations a stage holds at once.

    1F1B: the first stage holds pp (min(pp, m)); interleaved multiplies by 1 + (p-1)/(p v)
    (Narayanan et al. 2021; Megatron `theoretical_memory_usage`, formulas.md section 4). The last
    stage of 1F1B holds one. GPipe holds all m.
    """
    m, p, v = layout.grad_accum, layout.pp, layout.vpp
    if p == 1:
        return 1.0
    if layout.pp_schedule == "gpipe":
        return float(m)
    if stage == "last":
        return 1.0
    held = float(min(m, p))
    if layout.pp_schedule == "interleaved" and v > 1:
        held *= 1 + (p - 1) / (p * v)
    return held


def activation_memory(model: ModelSpec, layout: Layout, seq_len: int, stage: str) -> float:
    """Activations of one stage: per-layer terms x layers x in-flight micro-batches, plus for full
    recompute the one layer being recomputed (its full activations live during its backward)."""
    layers, moe_layers = stage_layers(model, layout)
    dense = activation_bytes_per_layer(model, layout, seq_len, moe_layer=False)
    sparse = activation_bytes_per_layer(model, layout, seq_len, moe_layer=True) if moe_layers else 0.0
    full_layer = max(dense if layers > moe_layers else 0.0, sparse)
    if layout.recompute == "full":
        per_micro_batch = layers * _layer_input_bytes(model, layout, seq_len)
        working = full_layer
    else:
        per_micro_batch = (layers - moe_layers) * dense + moe_layers * sparse
        working = 0.0
    total = per_micro_batch * in_flight_micro_batches(layout, stage) + working
    if stage in ("first", "only"):
        # Token ids (int64) and the embedding output per in-flight micro-batch (Megatron code: 8sbp + sbhp).
        s, b = seq_len / layout.cp, layout.micro_batch
        total += in_flight_micro_batches(layout, stage) * (8 * s * b + 2 * s * b * model.hidden_size / (
            layout.tp if layout.sequence_parallel else 1))
    return total


def logits_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Output logits and loss on the last stage, vocab-parallel /tp: the 16-bit logits 2sbV, the fp32
    log-softmax kept for backward 4sbV and one fp32 gradient 4sbV alive at once (specc's loop computes
    `cross_entropy(logits.float())`; 10 B per logit matches FSDPMemTracker's peaks on specc's model,
    benchmarks/plan_vs_tracker.py). fp32 training: 4 + 4 + 4. Megatron's estimate 4sbh(1 + V/h) keeps
    one fp32 copy (formulas.md section 4)."""
    s = seq_len / layout.cp
    per_element = 12.0 if layout.precision == "fp32" else 10.0
    return per_element * s * layout.micro_batch * model.vocab_size / layout.tp


def fsdp_buffer_memory(params: StageParams, layout: Layout) -> float:
    """Unsharded buffers of ZeRO-3/FSDP.

    Without pipelining: the current and the prefetched layer gathered in the compute dtype
    (2 x 2 B/param) and one layer's unsharded fp32 gradient awaiting reduce-scatter (4 B/param)
    (FSDP2 default prefetch of one layer; formulas.md section 3 'FSDP transient'), plus the root unit
    (embedding, final norm, head) gathered from forward to backward (measured with FSDPMemTracker).
    With pipelining, torchtitan keeps the stage's parameters gathered between micro-batches
    (`reshard_after_forward` is 'never' when PP is enabled) and the schedule defers the gradient
    reduce-scatter to the last micro-batch, so the whole stage is unsharded: 2 + 4 B/param.
    With gradient accumulation synchronised on the last micro-batch only (`parallel.grad_sync:
    last`), FSDP2 accumulates unsharded fp32 gradients of the whole stage: + 4 B/param.
    """
    if layout.sharded_states < 3 or layout.shard_degree == 1:
        return 0.0
    compute_bytes = 4.0 if layout.precision == "fp32" else 2.0
    stage = params.dense + params.experts
    if layout.pp > 1:
        return stage * (compute_bytes + 4.0)
    buffers = params.layer * (2 * compute_bytes + 4.0) + params.root * compute_bytes
    if layout.grad_accum > 1 and layout.grad_sync == "last":
        buffers += stage * 4.0
    return buffers


def stage_memory(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                 seq_len: int, stage: str) -> MemoryBreakdown:
    """Memory of one device of one pipeline stage."""
    params = stage_params(model, counts, layout, stage)
    weights, grads, optimizer = model_state_memory(params, layout)
    activations = activation_memory(model, layout, seq_len, stage)
    logits = logits_memory(model, layout, seq_len) if stage in ("last", "only") else 0.0
    buffers = fsdp_buffer_memory(params, layout)
    allocated = weights + grads + optimizer + activations + logits + buffers
    if hardware.is_tpu:
        reserve = tpu.RESERVE_GIB * GIB + tpu.FRAGMENTATION * allocated
    else:
        reserve = GPU_CONTEXT_GIB * GIB + GPU_FRAGMENTATION * allocated
    return MemoryBreakdown(params=weights, grads=grads, optimizer=optimizer, activations=activations,
                           logits=logits, fsdp_buffers=buffers, reserve=reserve,
                           capacity_gib=hardware.memory_gib, stage=stage)


def device_memory(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                  seq_len: int) -> MemoryBreakdown:
    """The most-loaded stage's memory: `only` for pp = 1, else the larger of first and last."""
    if layout.pp == 1:
        return stage_memory(model, counts, layout, hardware, seq_len, "only")
    first = stage_memory(model, counts, layout, hardware, seq_len, "first")
    last = stage_memory(model, counts, layout, hardware, seq_len, "last")
    return first if first.total >= last.total else last
