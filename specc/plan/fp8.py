"""What `precision: fp8` costs: which matmuls run in fp8, how fast, the casts they add, and the
bytes FSDP gathers, for the recipe the runtime really runs (`parallel.fp8_recipe`).

The torch runtime (`specc.runtime.train.precision.apply_float8`) swaps the transformer blocks'
Linear layers that `capabilities.fp8_linear_converts` accepts for torchao `Float8Linear`: their
three GEMMs per step (output, grad_input, grad_weight) run on fp8 operands with dynamic scales.
Attention (SDPA), the output head, MoE routers and the routed experts' grouped GEMMs stay bf16.

A converted Linear (M tokens, K inputs, N outputs) costs, beyond its GEMMs (torchao float8 README,
'Derivation': bf16_gemm_time vs fp8_gemm_time + fp8_overhead_time):
- casts, memory-bound: each cast reads its bf16 tensor twice (amax, then scale-and-convert) and
  writes 1 byte per element (CAST_BYTES); the input and grad_output are cast twice each (once per
  GEMM that reads them, `matmul_with_hp_or_float8_args`), the weight twice per micro-batch, or, under
  tensorwise FSDP, once per shard before an fp8 all-gather (a 1/shard share, left out);
- the fp8 GEMMs realise only part of the 2x peak: FP8_GEMM_GAIN per recipe.
Saved activations do not change: torchao keeps each Linear's bf16 input for backward (its
benchmarks: Llama3-8B peak memory 47.65 GB bf16, 47.77 tensorwise, 47.79 rowwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.plan import mla
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import fp8_linear_converts
from specc.spec.model import ModelSpec

FP8_GEMM_GAIN = {"tensorwise": 0.74, "rowwise": 0.33}
"""Share of the fp8 peak's extra throughput over bf16 (2x on H100: 1979 vs 989.5 TFLOP/s) that the
converted GEMMs realise: fp8 GEMM rate = bf16 rate x (1 + (fp8 peak / bf16 peak - 1) x gain). Solved
so that the planner reproduces torchao's published end-to-end speed-ups on Llama3-8B, 8 x H100, seq
8192, batch 1, FSDP2, torch.compile, per-op selective recompute (torchao/float8/README.md 'Training
benchmarks', torchao 0.10): +25.03% tensorwise with fp8 all-gather, +10.05% rowwise
(`tests/plan/test_plan_fp8.py` pins both). Rowwise is slower: its scaled GEMMs are CUTLASS kernels
that apply a scale per row and column in the epilogue, tensorwise uses cuBLAS's fp8 GEMM."""

MXFP8_GEMM_GAIN = 0.51
"""The same share for `fp8_recipe: mxfp8` on Blackwell (planned only; `capabilities.has_mx_tensor_cores`):
solved so that the planner reproduces torchtitan's published MXFP8 run, Llama3-8B on 8 x B200 (power
limited), seq 8192, batch 1, FSDP2, torch.compile, per-op SAC: 8307.5 tokens/s bf16, 9969.0 mxfp8_cublas
(+20.0%; float8 tensorwise +25.4% on the same machine) (torchtitan docs/mxfp8.md 'Performance', from
torchao's mx_formats benchmarks; `tests/plan/test_plan_architectures.py` pins it). All-gathers stay bf16
('all distributed communication for MXFP8 training is currently done in high precision')."""
FP8_GEMM_GAIN["mxfp8"] = MXFP8_GEMM_GAIN

TRANSFORMER_ENGINE_RECIPES = ("delayed", "current")
"""Transformer Engine's per-tensor recipes (`parallel.fp8_recipe`, planned only): `DelayedScaling` and
`Float8CurrentScaling`. Their GEMMs are the same cuBLASLt per-tensor-scaled fp8 kernels torch._scaled_mm
calls for torchao's tensorwise recipe, so they take tensorwise's FP8_GEMM_GAIN; what differs is the casts
(TE_CAST_BYTES) and the routed experts, which Megatron-Core's TEGroupedMLP also runs in fp8."""
for _recipe in TRANSFORMER_ENGINE_RECIPES:
    FP8_GEMM_GAIN[_recipe] = FP8_GEMM_GAIN["tensorwise"]

TE_CAST_BYTES = {"delayed": 2.0 + 1.0 + 1.0, "current": 2.0 + 2.0 + 1.0 + 1.0}
"""Bytes per element of Transformer Engine's one cast of a bf16 tensor: a fused cast-transpose kernel
(`transformer_engine.common` `cast_transpose`, `cast_transpose_dbias` for gradients) reads the tensor
once and writes both fp8 copies the forward and backward GEMMs need (row-major and transposed, 1 byte
each), so each tensor is cast once, not once per GEMM (TE docs, 'Using FP8 with Transformer Engine':
the fp8 transpose is produced with the cast). Delayed scaling takes its scale from the amax history of
earlier steps and reduces this step's amax inside the same kernel: read 2, write 1 + 1. Current scaling
needs this tensor's amax before scaling: one more read of 2 bytes (TE `Float8CurrentScaling`)."""

CAST_BYTES = 5.0
"""Bytes moved per element of one dynamic cast of a bf16 tensor: read 2 for the amax, read 2 and write
1 for the scaled fp8 copy (torchao `hp_tensor_to_float8_dynamic`), before torch.compile fuses the amax
into the producing kernel (`COMPILED_ELEMENTWISE_FRACTION` in timing.py applies)."""

MX_CAST_BYTES = 2.0 + 1.0 + 1.0 / 32
"""Bytes per element of one MXFP8 cast: one pass, each 32-element block's amax found in registers
(torchao mx_formats `to_mx` / its triton and CUDA dim0/dim1 cast kernels): read 2, write the 1-byte
element and one e8m0 scale per 32 elements."""

CASTS_PER_TENSOR = 2
"""Casts per input, grad_output and (without fp8 all-gather) weight element per micro-batch: one
for each of the two GEMMs that read it (both recipes; rowwise scales along a different axis each time,
tensorwise recomputes the amax)."""


@dataclass(frozen=True)
class Linear:
    """One matmul weight of a transformer block, as the runtime builds it (K inputs, N outputs)."""

    name: str
    in_features: int
    out_features: int
    tp_split: str = "out"
    """How tensor parallelism splits it (`parallelize.apply_tp`): `out` (column-parallel), `in`
    (row-parallel: wo, w2), `none` (MoE routers and shared experts, replicated over tp)."""

    def local(self, tp: int) -> tuple[float, float]:
        """(K, N) on one tensor-parallel rank."""
        if self.tp_split == "out":
            return self.in_features, self.out_features / tp
        if self.tp_split == "in":
            return self.in_features / tp, self.out_features
        return self.in_features, self.out_features


def block_linears(model: ModelSpec, moe_layer: bool) -> list[Linear]:
    """The nn.Linear layers of one block (`specc.runtime.train.model`): wq, wk, wv, wo, then the
    dense FFN (w1, w2, and w3 for SwiGLU) or, in an MoE layer, the router and the shared experts'
    FFN (one FFN of width n_shared x expert width). Routed experts are grouped GEMMs, not Linears."""
    h, d = model.hidden_size, model.head_size
    if model.mla is not None:  # planned only: MLA's projections, split as Megatron-Core splits them
        linears = [Linear(name, k, n, split) for name, (k, n, split) in mla.mla_matrices(model).items()]
    else:
        linears = [Linear("wq", h, model.num_heads * d), Linear("wk", h, model.kv_heads * d),
                   Linear("wv", h, model.kv_heads * d), Linear("wo", model.num_heads * d, h, "in")]
    width, ffn_split = model.ffn_hidden_size, ("out", "in")
    if moe_layer:
        moe = model.moe
        linears.append(Linear("router", h, moe.num_experts, "none"))
        if not moe.num_shared_experts:
            return linears
        width = (moe.expert_ffn_hidden_size or model.ffn_hidden_size) * moe.num_shared_experts
        ffn_split = ("none", "none")
    linears += [Linear("w1", h, width, ffn_split[0]), Linear("w2", width, h, ffn_split[1])]
    if model.activation == "swiglu":
        linears.append(Linear("w3", h, width, ffn_split[0]))
    return linears


def converted_linears(model: ModelSpec, moe_layer: bool, tp: int) -> list[Linear]:
    """The Linear layers of one block that run in fp8 (the runtime's `float8_module_filter`)."""
    return [linear for linear in block_linears(model, moe_layer)
            if linear.name != "router" and fp8_linear_converts(linear.in_features, linear.out_features, tp)]


def _per_layer_sum(model: ModelSpec, tp: int, value) -> float:
    """Sum of value(K, N) over the converted Linears' local shapes, every layer."""
    by_kind = {moe: sum(value(*linear.local(tp)) for linear in converted_linears(model, moe, tp))
               for moe in ((False, True) if model.moe else (False,))}
    return sum(by_kind[dims.is_moe_layer(model, i)] for i in range(model.num_layers))


def converted_flops_per_token(model: ModelSpec, tp: int) -> float:
    """Training matmul FLOPs per token that run in fp8, summed over the tp ranks (the unit of
    `params.flops_per_token`'s matmul term): 6 per converted weight (Kaplan et al. 2020, eq. 2.2);
    a replicated Linear (MoE shared experts) is computed on every tp rank."""
    return 6.0 * tp * _per_layer_sum(model, tp, lambda k, n: k * n)


def converted_params_per_layer(model: ModelSpec, tp: int, moe_layer: bool) -> float:
    """Local parameters of one layer held by converted Linears."""
    return sum(k * n for k, n in (linear.local(tp) for linear in converted_linears(model, moe_layer, tp)))


def converted_params(model: ModelSpec, tp: int, layers: int, moe_layers: int) -> float:
    """Local parameters held by converted Linears on a stage of `layers` layers, `moe_layers` of them MoE."""
    dense = (layers - moe_layers) * converted_params_per_layer(model, tp, False)
    return dense + (moe_layers * converted_params_per_layer(model, tp, True) if moe_layers else 0.0)


def gemm_speedup(fp8_peak: float, bf16_peak: float, recipe: str) -> float:
    """Converted GEMMs' rate over their bf16 rate (FP8_GEMM_GAIN)."""
    return 1.0 + (fp8_peak / bf16_peak - 1.0) * FP8_GEMM_GAIN[recipe]


def cast_bytes_per_token(model: ModelSpec, tp: int, tokens_per_micro_batch: float, fp8_all_gather: bool,
                         recipe: str = "tensorwise", micro_batches: int = 1) -> float:
    """HBM bytes the casts move per token (all layers, forward + backward).

    torchao (tensorwise, rowwise, mxfp8): CASTS_PER_TENSOR casts of CAST_BYTES for every input (K) and
    grad_output (N) element, and for every local weight element once per micro-batch unless weights
    arrive in fp8 (tensorwise FSDP all-gather). Transformer Engine (delayed, current): one cast-transpose
    of TE_CAST_BYTES per input and grad_output element, and the weights once per step, on the first of
    its `micro_batches` (TE's `is_first_microbatch`, which Megatron-Core passes: the fp8 weight copy is
    cached while the weights do not change)."""
    activations = _per_layer_sum(model, tp, lambda k, n: k + n)
    weights = _per_layer_sum(model, tp, lambda k, n: k * n) / tokens_per_micro_batch
    if recipe in TRANSFORMER_ENGINE_RECIPES:
        return TE_CAST_BYTES[recipe] * (activations + weights / micro_batches)
    weights = 0.0 if fp8_all_gather else weights
    return CASTS_PER_TENSOR * (MX_CAST_BYTES if recipe == "mxfp8" else CAST_BYTES) * (activations + weights)


def expert_cast_bytes_per_token(model: ModelSpec, recipe: str, local_experts: float, tokens_per_micro_batch: float,
                                micro_batches: int) -> float:
    """HBM bytes of Transformer Engine's casts for the routed experts per token (all MoE layers), which
    Megatron-Core's TEGroupedMLP runs in fp8 (torchao recipes keep them bf16: 0): one cast-transpose of
    TE_CAST_BYTES per input and grad_output element of each expert matrix, for the top_k x capacity
    rows a token is routed to, and the device's `local_experts` weights once per step."""
    if model.moe is None or recipe not in TRANSFORMER_ENGINE_RECIPES:
        return 0.0
    moe = model.moe
    h, f = model.hidden_size, moe.expert_ffn_hidden_size or model.ffn_hidden_size
    shapes = [(h, f), (f, h)] + ([(h, f)] if model.activation == "swiglu" else [])
    rows = moe.top_k * float(moe.capacity_factor)
    activations = rows * sum(k + n for k, n in shapes)
    weights = local_experts * sum(k * n for k, n in shapes) / (tokens_per_micro_batch * micro_batches)
    return TE_CAST_BYTES[recipe] * (activations + weights) * len(dims.moe_layer_ids(model))


def cast_memory(model: ModelSpec, tp: int, tokens_per_micro_batch: float, fp8_all_gather: bool) -> float:
    """Transient fp8 copies alive while the largest converted Linear runs backward (1 byte each):
    grad_output cast for each of its two GEMMs, the saved input re-cast, and the weight's copy unless
    it was gathered in fp8."""
    linears = converted_linears(model, False, tp) + (converted_linears(model, True, tp) if model.moe else [])
    peak = 0.0
    for linear in linears:
        k, n = linear.local(tp)
        weight = 0.0 if fp8_all_gather else k * n
        peak = max(peak, tokens_per_micro_batch * (2 * n + k) + weight)
    return peak
