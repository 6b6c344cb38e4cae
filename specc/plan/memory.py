"""Memory per device, broken down: model states, activations, buffers, reserve.

Every term cites its source. Sizes are bytes until `MemoryBreakdown` converts to GiB.
The most-loaded pipeline stage decides whether a layout fits: the first stage holds the
embedding and the most in-flight micro-batches, the last the output head and the logits;
both are computed and the larger is reported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from specc.plan import fp8, mla, tpu
from specc.plan.layout import Hardware, Layout, compute_element_bytes
from specc.plan.loss_memory import (chunked_loss_memory, local_logits, logit_gradient_memory, logits_memory,
                                     loss_implementation, vocab_shards)
from specc.plan.params import ParameterCount
from specc.spec import parallel_dims as dims
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

FP32_RMSNORM_EAGER_BYTES = 4.0
"""The same for fp32 training: one fp32 intermediate per norm (measured, benchmarks/plan_vs_tracker.py `fp32`)."""

EAGER_SOFTMAX_BYTES = 6.0
"""Bytes per attention-score element specc's eager attention keeps without dropout: the fp32 softmax
output and its 16-bit cast (`scores.float().softmax(-1).to(q.dtype)`), measured with FSDPMemTracker.
With dropout, Korthikanti's 5 (fp16 softmax 2 + mask 1 + dropout output 2) is used."""

def rmsnorm_eager_bytes(layout: Layout) -> float:
    """RMSNORM_EAGER_BYTES under mixed precision; fp32 training keeps FP32_RMSNORM_EAGER_BYTES."""
    return FP32_RMSNORM_EAGER_BYTES if layout.precision == "fp32" else RMSNORM_EAGER_BYTES


def eager_score_bytes(layout: Layout, dropout: bool) -> float:
    """Bytes per attention-score element eager attention keeps: EAGER_SOFTMAX_BYTES (fp32 softmax
    and its 16-bit cast) or Korthikanti's 5 with dropout; in fp32 training the cast is a no-op, so
    the softmax output 4 (+ mask 1 and dropout output 4 with dropout)."""
    if layout.precision == "fp32":
        return 9.0 if dropout else 4.0
    return 5.0 if dropout else EAGER_SOFTMAX_BYTES


GPU_FRAGMENTATION = 0.05
"""Caching-allocator fragmentation on top of live tensors: Megatron's theoretical estimator adds 5%
(`compute_activation_memory` overhead factor, docs/formulas.md section 4); applied to the whole allocation."""


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
    phase: str = "loss"
    """The moment of the step whose memory these figures are: `loss`, `regather` (fp32 FSDP re-gathering
    the root unit as backward starts), `backward` or `optimizer`."""
    loss: str = "full"
    """The loss implementation these figures assume: `parallel.loss` as the runtime runs it (`auto` resolved)."""

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
            "peak_phase": self.phase,
            "loss": self.loss,
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
class PipelineStageParams:
    """Parameters one device holds for one pipeline stage, split by how they are sharded."""

    dense: float
    """Parameters replicated over dp (already divided by tp where tensor-parallel)."""
    experts: float
    """Routed-expert parameters (divided by ep and tp); sharded over the expert-dp group."""
    layer: float
    """One transformer layer's parameters on this device (FSDP gathers one at a time)."""
    root: float = 0.0
    """Embedding, final norm and head on this device: FSDP's root unit, gathered again for the
    whole backward (its embedding gradient comes last)."""
    head: float = 0.0
    """Output head on this device (the embedding matrix when tied): its gradient is produced first
    in backward and lives, unsharded, until the root's reduce-scatter at the end."""


def stage_layers(model: ModelSpec, layout: Layout) -> tuple[int, int]:
    """(layers, MoE layers) on the most-loaded pipeline rank, split as specc's runtime splits them
    (`parallel_dims.pipeline_layer_ranges`: pp x vpp contiguous chunks, the remainder to the middle
    ones; Megatron: 'most loaded stage holds 1/p of the layers')."""
    return dims.most_loaded_stage(model, layout.pp, layout.vpp)


def pipeline_stage_params(model: ModelSpec, counts: ParameterCount, layout: Layout, stage: str) -> PipelineStageParams:
    """Per-device parameters as specc's runtime shards them (`specc/runtime/train/parallelize.py`):
    attention and dense FFN matrices / tp (norms and router replicated); MoE experts / ep, replicated
    over tp (Megatron would also split them by tp); token embedding and untied head vocab-sharded / tp,
    a tied embedding and learned positions replicated; embedding on the first stage, head on the last
    (Megatron theoretical memory)."""
    tp = layout.tp
    shards = vocab_shards(model, layout)
    layers, moe_layers = stage_layers(model, layout)
    dense_layers = layers - moe_layers
    shared = counts.shared_experts * counts.expert_ffn
    attention = _local_attention(counts, tp)
    body = layers * (attention + counts.norms_per_layer)
    body += dense_layers * counts.dense_ffn_per_layer / tp
    body += moe_layers * (counts.router_per_layer + shared)
    experts = moe_layers * counts.routed_experts * counts.expert_ffn / layout.ep
    root = head = 0.0
    if stage in ("first", "only"):
        root += counts.token_embedding / shards + counts.positions
    if stage in ("last", "only"):
        head = (counts.output_head or counts.token_embedding) / shards  # tied: the embedding matrix
        own_matrix = counts.output_head or stage == "last"  # tied on the only stage: already counted
        root += counts.final_norm + (head if own_matrix else 0.0)
    if stage in ("last", "only") and counts.mtp:  # MTP modules share the head, so sit on its stage (DeepSeek-V3 sec. 3.2.3)
        mtp_dense = counts.mtp - counts.mtp_experts
        body += mtp_dense / tp + model.mtp_depth * (1 - 1 / tp) * counts.attention_replicated_per_layer
        experts += counts.mtp_experts / layout.ep
    body += root
    layer = attention + counts.norms_per_layer + max(
        counts.dense_ffn_per_layer / tp if dense_layers else 0,
        (counts.router_per_layer + shared + counts.routed_experts * counts.expert_ffn / layout.ep)
        if moe_layers else 0)
    return PipelineStageParams(dense=body, experts=experts, layer=layer, root=root, head=head)


def _local_attention(counts: ParameterCount, tp: int) -> float:
    """One layer's attention parameters on a tp rank: split by heads over tp, except MLA's
    down-projections and latent norms, which every rank holds (`mla.mla_matrices`)."""
    replicated = counts.attention_replicated_per_layer
    return (counts.attention_per_layer - replicated) / tp + replicated


STACKS = ("specc", "megatron")
"""Training stacks whose memory habits the model knows (`Layout.stack`): specc's torch runtime (torchtitan's
conventions) and Megatron-Core with Transformer Engine (the published NeMo/Megatron runs)."""


def state_bytes(layout: Layout) -> tuple[float, float, float]:
    """Bytes per parameter for (weights, gradients, optimizer) before sharding.

    specc's runtimes keep fp32 parameters and cast to the compute dtype on the fly (FSDP2's
    MixedPrecisionPolicy, torchtitan's convention, or autocast on one rank; torch-xla the same): the
    parameter *is* the fp32 master, so 4 + 4 (fp32 grads) + 8 (Adam m, v) = 16 B/param in every
    precision. (Megatron keeps a separate bf16 copy, 2 + 4 + 12 = 18 B/param per its
    dist_optimizer.md table; specc does not run that, so it does not charge it.) Transient
    compute-dtype copies are charged where they live (the FSDP gather buffers below).

    Megatron (`stack: megatron`): 16-bit parameters, main gradients and an optimizer holding fp32 master
    weights with Adam's m and v, 4 + 4 + 4 = 12 B (Megatron-LM docs/source/api-guide/dist_optimizer.md,
    'Data flow' and its bytes-per-parameter table: bf16 params with fp32 grads, 6 + 12/d). Main gradients
    are fp32 for bf16 (Megatron-LM `arguments.py` forces `accumulate_allreduce_grads_in_fp32` with bf16),
    16-bit for fp16 (its default), or `Layout.grad_bytes` (NeMo's performance scripts:
    `optim.grad_sync_dtype=bf16`). In fp32 training the parameter is its own master: 4 + 4 + 8.
    """
    if layout.stack != "megatron":
        return 4.0, 4.0, 8.0
    if layout.precision == "fp32":
        return 4.0, layout.grad_bytes or 4.0, 8.0
    default_grads = 2.0 if layout.precision == "fp16" else 4.0
    return compute_element_bytes(layout), layout.grad_bytes or default_grads, 12.0


def optimizer_grad_copy(optimizer: float, layout: Layout) -> float:
    """Megatron with 16-bit main gradients: at the optimizer step the (distributed) optimizer copies its
    gradient shard to fp32 beside the fp32 master (`_copy_model_grads_to_main_grads`), 4 B per parameter
    sharded like the 12 B of optimizer state (hence dist_optimizer.md's 20 and 4 + 16/d for fp16);
    alive in the optimizer phase only."""
    if layout.stack != "megatron" or layout.precision == "fp32" or state_bytes(layout)[1] >= 4:
        return 0.0
    return optimizer * 4.0 / 12.0


TE_FP8_WORKSPACE_BYTES = 2.0
"""Bytes per fp8-computed weight that Transformer Engine keeps between micro-batches under Megatron-Core:
the weight cast to fp8 and its fp8 transpose (Hopper's fp8 GEMMs take K-major operands only, so wgrad and
dgrad need the transpose), cached from the first micro-batch of a step to the last (TE `Linear.forward`'s
`is_first_microbatch`: 'allows caching of the FP8 versions of the weights'; Megatron-Core's TE wrappers
pass it unless `disable_parameter_transpose_cache`). Reasoned from TE's API, not measured."""


def te_fp8_workspace_memory(model: ModelSpec, counts: ParameterCount, layout: Layout) -> float:
    """TE's cached fp8 weights on the most-loaded stage (TE_FP8_WORKSPACE_BYTES per local matmul weight:
    attention and dense FFN / tp, routed experts / ep, Megatron-Core's grouped GEMMs run fp8 too);
    nothing outside `stack: megatron` under fp8, nor under FSDP, whose gathered weights do not outlive
    their layer."""
    if layout.stack != "megatron" or layout.precision != "fp8" or layout.sharded_states >= 3:
        return 0.0
    layers, moe_layers = stage_layers(model, layout)
    attention = counts.attention_per_layer / layout.tp
    dense = (layers - moe_layers) * counts.dense_ffn_per_layer / layout.tp
    sparse = moe_layers * (counts.shared_experts * counts.expert_ffn
                           + counts.routed_experts * counts.expert_ffn / layout.ep)
    return TE_FP8_WORKSPACE_BYTES * (layers * attention + dense + sparse)


def model_state_memory(params: PipelineStageParams, layout: Layout) -> tuple[float, float, float]:
    """(weights, grads, optimizer) bytes after ZeRO sharding (Rajbhandari et al. 2020, sec. 5):
    stage 1 shards the optimizer, 2 also gradients, 3/FSDP also weights, over dp x cp
    (HSDP: within a replica group); experts over the expert-dp group (Megatron's distributed
    optimizer: within a replica group; specc's runtime gives ep-sharded experts their own FSDP unit
    over all dp x cp / ep expert-dp ranks, replicas included, `apply_expert_fsdp`)."""
    w, g, o = state_bytes(layout)
    stage = layout.sharded_states
    shard = layout.shard_degree
    expert_ranks = layout.dp * layout.cp if stage >= 3 and layout.ep > 1 else shard
    expert_shard = max(1, expert_ranks // layout.ep)
    weights = grads = optimizer = 0.0
    for count, degree in ((params.dense, shard), (params.experts, expert_shard)):
        weights += count * w / (degree if stage >= 3 else 1)
        grads += count * g / (degree if stage >= 2 else 1)
        optimizer += count * o / (degree if stage >= 1 else 1)
    return weights, grads, optimizer


def megatron_activation_bytes_per_layer(model: ModelSpec, layout: Layout, seq_len: int, moe_layer: bool) -> float:
    """Activations one Megatron-Core layer built from Transformer Engine modules keeps for backward, for one
    micro-batch (`stack: megatron`): Korthikanti et al. 2022 sec. 4.1's accounting, with what TE's fused
    modules store.

    Outside the tensor-parallel region (all divided by tp under sequence parallelism: TE saves its local
    norm output and all-gathers it again in backward, Korthikanti sec. 4.2.2): the two norm inputs 2 x 2sbh;
    the QKV and FC1 GEMM inputs (the norm outputs, which TE's LayerNormLinear saves as the GEMM operand:
    1 B per element under fp8, TE saving the fp8 cast rather than the 16-bit tensor); dropout masks sbh each.
    Inside (divided by tp): Q, K, V and the attention output 2sb(a qk + g qk + g v + a v), kept by the
    attention kernel; under fp8 the output projection also keeps its own fp8 copy of its input (sbav);
    flash/cuDNN softmax statistics, fp32 per query and head (4asb), or with eager attention Korthikanti's
    5as^2b (scores, dropout mask and output), dropped by selective recompute (Korthikanti's selective
    recomputes core attention only); FFN: FC1's output, which the fused bias-GeLU / SwiGLU keeps to
    recompute its activation in backward (2sbf; 2 x 2sbf for SwiGLU's two halves), and FC2's input (the
    activation output, 2sbf or 1 B under fp8), where specc's eager SwiGLU keeps four tensors. MoE layers
    (Megatron-Core dropless): the same FFN terms per routed copy of a token (top_k x capacity), plus the
    permuted expert input (a GEMM operand: fp8 or 16-bit) and the experts' output kept for the
    probability-weighted unpermute (2sbh per copy); shared experts as a dense FFN of their width.
    Bf16, f = 4h, MHA, GeLU, dropout: 34sbh + 5as^2b, Korthikanti's Table 2 first row (docs/formulas.md
    section 4). Fused norms keep no fp32 intermediates (TE's RMSNorm/LayerNorm save input and 1/sigma)."""
    s = dims.local_seq_len(seq_len, layout.cp)
    b, h, a = layout.micro_batch, model.hidden_size, model.num_heads
    g = model.num_heads if model.mla is not None else model.kv_heads
    qk, v = mla.qk_head_dim(model), mla.v_head_dim(model)
    e = compute_element_bytes(layout)
    operand = 1.0 if layout.precision == "fp8" else e  # bytes of a saved GEMM input
    dropout = model.dropout > 0
    outside = s * b * h * (2 * e + 2 * operand + (2 if dropout else 0))
    attention = e * s * b * (a * qk + g * qk + g * v + a * v)
    if layout.precision == "fp8":
        attention += s * b * a * v
    if model.attention != "eager":
        attention += 4 * a * s * b
    elif layout.recompute == "none":
        attention += a * s * b * seq_len * eager_score_bytes(layout, dropout)

    def ffn(width: float) -> float:
        return s * b * width * (e * (2 if model.activation == "swiglu" else 1) + operand)

    if moe_layer:
        moe = model.moe
        width = moe.expert_ffn_hidden_size or model.ffn_hidden_size
        copies = moe.top_k * moe.capacity_factor
        inside = copies * (ffn(width) + s * b * h * (operand + e)) + moe.num_shared_experts * ffn(width)
    else:
        inside = ffn(model.ffn_hidden_size)
    inside += attention
    return outside / layout.tp + inside / layout.tp if layout.sequence_parallel else outside + inside / layout.tp


def activation_bytes_per_layer(model: ModelSpec, layout: Layout, seq_len: int, moe_layer: bool,
                               sp_keeps_gathered: bool = True) -> float:
    """Activations one layer keeps for backward for one micro-batch (Korthikanti et al. 2022,
    sec. 4.1 / Table 2), generalised to GQA, head_dim, SwiGLU, MoE and fp32 training (each
    16-bit "2" becomes 4 bytes; checked by the tracker's `fp32*` configs).

    Outside the tensor-parallel region (divided by tp only with sequence parallelism): two norm inputs
    4sbh, attention input 2sbh, MLP input 2sbh, two residual dropout masks 2sbh (if dropout) = 10sbh.
    Sequence parallelism as torch's DTensor runs it (specc's runtime, torchtitan) keeps the all-gathered
    inputs of the column-parallel matmuls (attention and MLP input) and the row-parallel matmuls' partial
    outputs before their reduce-scatter whole; Megatron re-gathers in backward and divides all of them
    (`sp_keeps_gathered=False`, Korthikanti's accounting). Measured with FSDPMemTracker on specc's runtime
    under tp 2-4 with and without SP (benchmarks/plan_vs_tracker.py `tp*` configs).
    Inside (divided by tp): Q, K, V and the output-projection input 2sb(2a + 2g)d; FFN 2sbf per stored
    tensor (gelu/relu: 2; SwiGLU in torch eager, as specc's runtime and torchtitan run it: gate, up,
    silu(gate) and their product = 4); attention scores 5as^2b with dropout (Korthikanti), 6as^2b
    without (specc's fp32 softmax) only for eager attention without recompute (flash/sdpa never
    materialise them; they keep an fp32 log-sum-exp, 4asb); RMSNorm's eager fp32 intermediates 12sbh.
    With f = 4h, MHA, gelu, dropout this is 34sbh + 5as^2b, Korthikanti's Table 2 first row.

    Selective recompute: with eager attention, Korthikanti's (the score terms are recomputed); with
    flash/sdpa, specc's runtime policy (`specc/runtime/train/parallelize.py` `_save_matmuls_policy`):
    matmul and attention outputs are kept, pointwise ops recomputed from them and the block input.
    `selective_policy: alternate_matmuls` is torchtitan's op-level policy (every other matmul kept,
    `_alternate_matmuls_contexts`), both checked against FSDPMemTracker (benchmarks/plan_vs_tracker.py).
    Under `stack: megatron`, `megatron_activation_bytes_per_layer`.
    """
    if layout.stack == "megatron":
        return megatron_activation_bytes_per_layer(model, layout, seq_len, moe_layer)
    s = dims.local_seq_len(seq_len, layout.cp)
    b = layout.micro_batch
    h, a, g, d = model.hidden_size, model.num_heads, model.kv_heads, model.head_size
    qk, v = mla.qk_head_dim(model), mla.v_head_dim(model)
    if model.mla is not None:
        g = model.num_heads  # MLA up-projects a key and a value per head (`mla.kv_heads_computed`)
    tp = layout.tp
    e = compute_element_bytes(layout)  # the "2" of 16-bit tensors in Korthikanti's terms; 4 in fp32 training
    dropout = model.dropout > 0
    width, ffn_scale, dispatched = model.ffn_hidden_size, 1.0, 0.0
    if moe_layer:
        moe = model.moe
        width = moe.expert_ffn_hidden_size or model.ffn_hidden_size
        ffn_scale = moe.top_k * moe.capacity_factor + moe.num_shared_experts
        dispatched = e * s * b * h * moe.top_k  # tokens permuted to their experts
    matmul_saving = layout.recompute == "selective" and model.attention != "eager"
    alternate = layout.recompute == "selective" and layout.selective_policy == "alternate_matmuls"
    # `outside` is split into what sequence parallelism shards and what it keeps gathered (docstring).
    if alternate:
        # torchtitan's op-level policy keeps every other matmul output in forward order: wq (1st), wv (3rd),
        # w1 (5th) and, for SwiGLU, w2 (7th); wk, wo, w3 (or an ungated w2) are recomputed; plus the
        # block input and, with flash/sdpa, the attention output. Eager attention's batched matmuls are
        # not counted and are recomputed with the softmax. MoE expert FFNs are treated like w1 (approximate).
        sharded, gathered = e * s * b * h, (e * s * b * h if model.activation == "swiglu" else 0.0)
        attention = e * s * b * (a * qk + g * v) + (e * s * b * v * a if model.attention != "eager" else 0.0)
        ffn = ffn_scale * e * s * b * width + dispatched
    elif matmul_saving:
        # Block input 2sbh; Q, K, V, attention output 2sbd(2a + 2g); o-proj and w2 outputs 4sbh;
        # FFN matmul outputs (w1, w3 for SwiGLU): 2sbf each. Norm outputs and activations recomputed.
        sharded, gathered = e * s * b * h, 2 * e * s * b * h
        attention = e * s * b * (a * qk + g * qk + g * v + a * v)
        gathered += e * s * b * mla.attention_activation_elements(model, False)[1] / 2  # MLA latents (matmul outputs)
        ffn = ffn_scale * e * s * b * width * (2 if model.activation == "swiglu" else 1) + dispatched
    else:
        # norm inputs (+ dropout masks) sharded; attention and MLP inputs gathered
        sharded, gathered = s * b * h * (2 * e + (2 if dropout else 0)), 2 * e * s * b * h  # masks: 1 B each
        if model.norm == "rmsnorm" and layout.recompute == "none" and not layout.compile:
            sharded += 2 * rmsnorm_eager_bytes(layout) * s * b * h
        # eager attention's batched matmuls keep K and V expanded to every query head (GQA/MQA)
        inside_elements, latents = mla.attention_activation_elements(model, model.attention == "eager")
        attention = e * s * b * inside_elements
        gathered += e * s * b * latents  # MLA latents: replicated down-projections, outside the tp split
        stored_ffn = 4 if model.activation == "swiglu" else 2
        ffn = ffn_scale * e * s * b * width * stored_ffn + dispatched
        if moe_layer:
            # specc's capacity-padded dispatch keeps the experts' input at capacity (top_k x capacity
            # tokens, not top_k) and their outputs for the weighted combine (FSDPMemTracker, `moe` config)
            padded = e * s * b * h * model.moe.top_k * model.moe.capacity_factor
            ffn += 2 * padded - dispatched
    if model.attention != "eager":
        scores = 4 * a * s * b  # flash/sdpa: fp32 log-sum-exp per query and head
    elif layout.recompute == "none" and not alternate:
        scores = a * s * b * seq_len * eager_score_bytes(layout, dropout)
    else:
        scores = 0.0  # eager core attention recomputed (selective): nothing kept
    inside = (attention + ffn + scores) / tp
    if layout.sequence_parallel:
        return sharded / tp + (gathered if sp_keeps_gathered else gathered / tp) + inside
    return sharded + gathered + inside


def _layer_input_bytes(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Full recompute keeps only each layer's input, 2sbh (/t with sequence parallelism)."""
    s = dims.local_seq_len(seq_len, layout.cp)
    value = compute_element_bytes(layout) * s * layout.micro_batch * model.hidden_size
    return value / layout.tp if layout.sequence_parallel else value


def in_flight_micro_batches(layout: Layout, stage: str) -> float:
    """Micro-batches whose activations a stage holds at once.

    1F1B: the first stage holds pp (min(pp, m)); interleaved multiplies by 1 + (p-1)/(p v)
    (Narayanan et al. 2021; Megatron `theoretical_memory_usage`, docs/formulas.md section 4). The last
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
    """Activations a stage stores for backward: per-layer terms x layers x in-flight micro-batches
    (full recompute: each recomputed layer's input only; with `recompute_every: n` the other blocks
    keep everything, `parallel_dims.is_recomputed_layer`), plus the token ids and embedding output,
    and on the head's stage the MTP modules (`mtp_activation_memory`)."""
    layers, moe_layers = stage_layers(model, layout)
    if layout.recompute == "full":
        recomputed, recomputed_moe = dims.recomputed_layers_of_most_loaded_stage(model, layout.pp, layout.vpp,
                                                                                 layout.recompute_every)
        per_micro_batch = recomputed * _layer_input_bytes(model, layout, seq_len)
        kept = dataclasses.replace(layout, recompute="none")
        layers, moe_layers = layers - recomputed, moe_layers - recomputed_moe
    else:
        per_micro_batch, kept = 0.0, layout
    if layers:
        dense = activation_bytes_per_layer(model, kept, seq_len, moe_layer=False)
        sparse = activation_bytes_per_layer(model, kept, seq_len, moe_layer=True) if moe_layers else 0.0
        per_micro_batch += (layers - moe_layers) * dense + moe_layers * sparse
    total = per_micro_batch * in_flight_micro_batches(layout, stage)
    if stage in ("first", "only"):
        # Token ids (int64) and the embedding output per in-flight micro-batch (Megatron code: 8sbp + sbhp).
        s, b = dims.local_seq_len(seq_len, layout.cp), layout.micro_batch
        total += in_flight_micro_batches(layout, stage) * (8 * s * b + compute_element_bytes(layout) * s * b * model.hidden_size / (
            layout.tp if layout.sequence_parallel else 1))
    if stage in ("last", "only"):
        total += mtp_activation_memory(model, layout, seq_len) * in_flight_micro_batches(layout, stage)
    return total


def mtp_activation_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Activations the D multi-token prediction modules keep (DeepSeek-V3 eqs. 21-22): per module its
    block's (as a main-model block under the same recompute) plus the two normed inputs of M_k, the
    shifted embedding and M_k's input (2h wide): 4 x 2sbh in 16 bits, not split by tp."""
    total = 0.0
    s, b = dims.local_seq_len(seq_len, layout.cp), layout.micro_batch
    for depth in range(model.mtp_depth):
        if layout.recompute == "full":
            block = _layer_input_bytes(model, layout, seq_len)
        else:
            block = activation_bytes_per_layer(model, layout, seq_len, mla.mtp_block_is_moe(model, depth))
        total += block + 4 * compute_element_bytes(layout) * s * b * model.hidden_size
    return total


def layer_backward_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Transient memory of back-propagating one layer, on top of the stored activations: its
    gradient temporaries, about one layer's activations without recompute, plus, under recompute,
    the activations the recompute rebuilds (everything but what was kept).

    Measured with FSDPMemTracker on specc's runtime (benchmarks/plan_vs_tracker.py, `wide*` configs
    whose peak falls in backward): within 3% of the whole-step peak for none, selective and full.
    """
    layers, moe_layers = stage_layers(model, layout)
    kinds = ([False] if layers > moe_layers else []) + ([True] if moe_layers else [])
    without = dataclasses.replace(layout, recompute="none")
    worst = 0.0
    for moe_layer in kinds:
        full = activation_bytes_per_layer(model, without, seq_len, moe_layer)
        if layout.recompute == "full":
            kept = _layer_input_bytes(model, layout, seq_len)
        elif layout.recompute == "selective":
            kept = activation_bytes_per_layer(model, layout, seq_len, moe_layer)
        else:
            kept = full
        worst = max(worst, full + (full - kept))
    return worst


def fp8_gathered_saving(model: ModelSpec, layout: Layout, layers: int, moe_layers: int) -> float:
    """Bytes saved on gathered weights when tensorwise fp8 gathers converted weights as 1-byte fp8
    instead of 2-byte bf16 (FSDP2 with torchao's fp8 all-gather), for `layers` layers."""
    if layout.precision != "fp8" or layout.fp8_recipe != "tensorwise" or layout.dp * layout.cp == 1:
        return 0.0
    return fp8.converted_params(model, layout.tp, layers, moe_layers) * (compute_element_bytes(layout) - 1.0)


def fp8_cast_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """fp8 copies alive while the largest converted Linear runs backward (`fp8.cast_memory`)."""
    if layout.precision != "fp8":
        return 0.0
    gathered_fp8 = layout.fp8_recipe == "tensorwise" and layout.dp * layout.cp > 1
    return fp8.cast_memory(model, layout.tp, layout.micro_batch * seq_len / layout.cp, gathered_fp8)


def persistent_fsdp_memory(params: PipelineStageParams, layout: Layout, model: ModelSpec | None = None) -> float:
    """Unsharded ZeRO-3/FSDP buffers alive for the whole step.

    With pipelining, torchtitan keeps the stage's parameters gathered between micro-batches
    (`reshard_after_forward` is 'never' when PP is enabled) and the schedule defers the gradient
    reduce-scatter to the last micro-batch, so the whole stage is unsharded: 2 + 4 B/param.
    With gradient accumulation synchronised on the last micro-batch only (`parallel.grad_sync:
    last`), FSDP2 accumulates unsharded fp32 gradients of the whole stage: 4 B/param.
    """
    if layout.sharded_states < 3 or layout.shard_degree == 1:
        return 0.0
    stage = params.dense + params.experts
    if layout.pp > 1:
        saving = fp8_gathered_saving(model, layout, *stage_layers(model, layout)) if model is not None else 0.0
        return stage * (compute_element_bytes(layout) + 4.0) - saving
    if layout.grad_accum > 1 and layout.grad_sync == "last":
        return stage * 4.0
    return 0.0


def largest_local_matrix(model: ModelSpec, layout: Layout) -> float:
    """Parameters of the largest weight operand one matmul reads on a device: a block Linear's local
    shard (`fp8.block_linears`, split by tp), or an MoE layer's routed experts on this rank, which run
    as one grouped matmul (E/ep experts x h x expert width)."""
    kinds = [False] + ([True] if model.moe else [])
    largest = max(k * n for moe in kinds for k, n in (linear.local(layout.tp) for linear in fp8.block_linears(model, moe)))
    if model.moe:
        width = model.moe.expert_ffn_hidden_size or model.ffn_hidden_size
        largest = max(largest, model.moe.num_experts / layout.ep * model.hidden_size * width)
    return largest


def backward_fsdp_memory(params: PipelineStageParams, layout: Layout, model: ModelSpec | None = None,
                         xla: bool = False) -> float:
    """Unsharded ZeRO-3/FSDP buffers during backward without pipelining (FSDP2 defaults, docs/formulas.md
    section 3 'FSDP transient'): the layer being back-propagated and the prefetched one, gathered in
    the compute dtype (2 x 2 B/param); one layer's fp32 gradient awaiting reduce-scatter (4 B/param);
    the root unit (embedding, final norm, head) gathered for the whole backward, with the head's
    16-bit gradient (measured with FSDPMemTracker, benchmarks/plan_vs_tracker.py).

    Under XLA (`xla`) the unit is one matmul's weight, not a layer: GSPMD partitions each operation on
    its own and inserts the all-gather at the operand of the dot that reads a sharded weight, and the
    reduce-scatter at the dot producing its gradient (Xu et al. 2021, "GSPMD", arXiv 2105.04663: per-operator
    partitioning and its weight-update sharding), so the gathered weights are the largest matmul's and the
    prefetched next one's, with its gradient (`largest_local_matrix`, or the head, itself a matmul's
    weight; the embedding is gathered for its lookup alone)."""
    if layout.sharded_states < 3 or layout.shard_degree == 1 or layout.pp > 1:
        return 0.0
    compute_bytes = compute_element_bytes(layout)
    if xla and model is not None:
        return max(largest_local_matrix(model, layout), params.head) * (2 * compute_bytes + 4.0)
    saving = 0.0
    if model is not None:  # tensorwise fp8: the two gathered layers' converted weights in 1 byte (an MoE
        # layer's, the fewer, when the model has any: `params.layer` is the larger layer)
        saving = 2 * fp8_gathered_saving(model, layout, 1, 1 if model.moe else 0)
    return params.layer * (2 * compute_bytes + 4.0) + (params.root + params.head) * compute_bytes - saving


def root_regather_memory(params: PipelineStageParams, layout: Layout) -> float:
    """fp32 FSDP (no mixed precision): once the loss's backward has produced the gradient of the root
    module's output, the root unit (embedding, final norm, head) is all-gathered again; FSDP2 copies
    the all-gather output into the unsharded fp32 parameters, so both are alive: 2 x 4 B/param, beside
    that gradient (`logit_gradient_memory`; FSDPMemTracker, benchmarks/plan_vs_tracker.py `fp32*`
    configs). Under mixed precision the tracker shows no such moment above the loss's."""
    if layout.precision != "fp32" or layout.sharded_states < 3 or layout.shard_degree == 1 or layout.pp > 1:
        return 0.0
    return params.root * 8.0


def chunked_loss_fsdp_memory(params: PipelineStageParams, layout: Layout) -> float:
    """Unsharded ZeRO-3/FSDP buffers while the chunked loss back-propagates (pp = 1): the loss runs inside
    the root module's forward, so FSDP's pre-backward hook has gathered the root unit again (embedding,
    final norm, head; in fp32 too, where the full loss's moment also holds the all-gather output,
    `root_regather_memory`) and prefetched the last layer before the loss's backward starts; the head's
    unsharded gradient is written during it (all in the compute dtype; FSDPMemTracker, `chunked-*`
    configs). With pp > 1 `persistent_fsdp_memory` already holds the whole stage and its gradients."""
    if layout.sharded_states < 3 or layout.shard_degree == 1 or layout.pp > 1:
        return 0.0
    return (params.root + params.head + params.layer) * compute_element_bytes(layout)


FSDP_REDUCE_BYTES = 4.0
"""Bytes per gradient element FSDP2 reduce-scatters: fp32 (torchtitan's and specc's
`MixedPrecisionPolicy(reduce_dtype=torch.float32)`)."""


def fsdp_stream_pools(params: PipelineStageParams, layout: Layout) -> float:
    """Memory the CUDA caching allocator keeps reserved for FSDP2's side streams, on top of the default
    stream's peak (torch's CUDA semantics notes, 'Memory management': a cached block is reused only by
    allocations on the stream it was allocated on; with `expandable_segments`, which torchtitan's launcher
    sets, each stream's segments still grow to its own high-water mark and stay mapped). FSDP2
    (torch.distributed.fsdp `_fsdp_collectives`) allocates its all-gather outputs on the all-gather stream
    (up to two units in flight with prefetching: 2 x the largest unit in the compute dtype; the root unit,
    embedding + norm + head when they are not wrapped apart, is usually the largest) and the
    reduce-scatter inputs, the unsharded gradients in FSDP_REDUCE_BYTES, on the reduce-scatter stream.
    So the reserved peak ("max reserved", what torchtitan reports) exceeds the allocated one by these two
    pools, whichever moment of the step is the peak. (At the backward moment the planner also counts one
    layer's gradient awaiting reduce-scatter among the allocated buffers: counted twice there.)"""
    if layout.sharded_states < 3 or layout.shard_degree == 1 or layout.stack != "specc":
        return 0.0
    unit = max(params.layer, params.root)
    return compute_element_bytes(layout) * max(2 * params.layer, params.root) + FSDP_REDUCE_BYTES * unit


def _grads_alive_at_loss(layout: Layout) -> bool:
    """FSDP2 gradients are freed by `zero_grad(set_to_none=True)` and only exist again once
    backward reduce-scatters them; with accumulation they persist from the first micro-batch on.
    DDP buckets and Megatron's contiguous gradient buffer are allocated for the whole run."""
    return layout.sharded_states < 3 or layout.grad_accum > 1


def pipeline_stage_memory(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                 seq_len: int, stage: str) -> MemoryBreakdown:
    """Memory of one device of one pipeline stage at the step's peak moment (module docstring)."""
    params = pipeline_stage_params(model, counts, layout, stage)
    weights, grads, optimizer = model_state_memory(params, layout)
    weights += te_fp8_workspace_memory(model, counts, layout)
    stored = activation_memory(model, layout, seq_len, stage)
    persistent = persistent_fsdp_memory(params, layout, model)
    live_grads = grads if _grads_alive_at_loss(layout) else 0.0
    head = stage in ("last", "only")
    chunked = head and layout.stack != "megatron" and loss_implementation(layout, hardware.is_tpu) == "chunked"
    phases = {
        "loss": dict(grads=live_grads, activations=stored,
                     logits=logits_memory(model, layout, seq_len, hardware.is_tpu) if head else 0.0,
                     fsdp_buffers=persistent + (chunked_loss_fsdp_memory(params, layout) if chunked else 0.0)),
        "regather": dict(grads=live_grads, activations=stored,
                         logits=logit_gradient_memory(model, layout, seq_len) if head and not chunked else 0.0,
                         fsdp_buffers=persistent + root_regather_memory(params, layout)),
        "backward": dict(grads=live_grads, activations=stored + layer_backward_memory(model, layout, seq_len)
                         + fp8_cast_memory(model, layout, seq_len),
                         logits=0.0, fsdp_buffers=persistent + backward_fsdp_memory(params, layout, model, hardware.is_tpu)),
        "optimizer": dict(grads=grads + optimizer_grad_copy(optimizer, layout), activations=0.0, logits=0.0,
                          fsdp_buffers=persistent),
    }
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    parts = phases[phase]
    allocated = weights + optimizer + sum(parts.values())
    if hardware.is_tpu:
        reserve = tpu.RESERVE_GIB * GIB + tpu.FRAGMENTATION * allocated
    else:
        reserve = GPU_CONTEXT_GIB * GIB + GPU_FRAGMENTATION * allocated
        if hardware.accelerator.kind == "gpu":
            reserve += fsdp_stream_pools(params, layout)
    return MemoryBreakdown(params=weights, optimizer=optimizer, reserve=reserve, capacity_gib=hardware.memory_gib,
                           stage=stage, phase=phase, loss=loss_implementation(layout, hardware.is_tpu), **parts)


def device_memory(model: ModelSpec, counts: ParameterCount, layout: Layout, hardware: Hardware,
                  seq_len: int) -> MemoryBreakdown:
    """The most-loaded stage's memory: `only` for pp = 1, else the larger of first and last."""
    if layout.pp == 1:
        return pipeline_stage_memory(model, counts, layout, hardware, seq_len, "only")
    first = pipeline_stage_memory(model, counts, layout, hardware, seq_len, "first")
    last = pipeline_stage_memory(model, counts, layout, hardware, seq_len, "last")
    return first if first.total >= last.total else last
