"""The structural terms of the time model that no published row calibrates (issue 16): context-parallel
K/V per tp rank, its hiding window under fp8, MoE capacity, permutation and tile fill, attention kernels."""

from __future__ import annotations

import dataclasses

from specc.catalog import load_catalog
from specc.plan import timing
from specc.plan.estimate import Workload, estimate_layout
from specc.plan.layout import Layout
from specc.spec.model import ModelSpec

LLAMA_8B = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                     vocab_size=128256, max_seq_len=131072)
MOE = ModelSpec(num_layers=16, hidden_size=2048, num_heads=16, ffn_hidden_size=1024, vocab_size=32000,
                max_seq_len=4096, moe={"num_experts": 64, "top_k": 8, "capacity_factor": 1.0})


def _work(model: ModelSpec, seq: int, batch: int, devices: int, accelerator: str = "h100-sxm", **figures) -> Workload:
    acc = dataclasses.replace(load_catalog()[accelerator], **figures)
    return Workload(model=model, seq_len=seq, batch_sequences=batch, accelerator=acc, devices=devices,
                    devices_per_node=acc.devices_per_node)


def _step(work: Workload, layout: Layout):
    return estimate_layout(work, layout).time


def test_context_parallel_passes_only_the_local_kv_heads():
    """A CP ring of 4 inside a node with a slow link (5 GB/s): each tp rank passes kv_heads / tp heads, so the
    exposed K/V time falls with tp at the same sequence split."""
    exposed = {tp: _step(_work(LLAMA_8B, 4096, 16, 4 * tp, intra_node_gbps=5.0),
                         Layout(dp=1, tp=tp, cp=4, fsdp=True, grad_accum=16)).cp_comm for tp in (1, 2, 4)}
    assert exposed[1] > exposed[2] > exposed[4] > 0


def test_context_parallel_window_is_attention_at_the_bf16_rate_under_fp8():
    """Attention is not converted to fp8: the window hiding the ring is the same under fp8 as under bf16."""
    work = _work(LLAMA_8B, 4096, 16, 4, intra_node_gbps=5.0)
    layout = Layout(dp=1, cp=4, fsdp=True, grad_accum=16)
    bf16 = _step(work, layout).cp_comm
    fp8 = _step(work, dataclasses.replace(layout, precision="fp8")).cp_comm
    assert 0 < fp8 == bf16


def test_moe_experts_are_charged_at_capacity():
    """specc pads every expert to its capacity: capacity_factor 2 costs more compute and all-to-all than 1."""
    work1 = _work(MOE, 4096, 64, 8)
    layout = Layout(dp=8, ep=8, fsdp=True, micro_batch=2, grad_accum=4)
    roomy = _work(MOE.model_copy(update={"moe": MOE.moe.model_copy(update={"capacity_factor": 2.0})}), 4096, 64, 8)
    one, two = _step(work1, layout), _step(roomy, layout)
    assert two.compute > one.compute
    assert two.ep_comm > 1.9 * one.ep_comm


def test_moe_permutation_and_tile_fill_cost_time_beyond_the_dense_gemms():
    """Few rows per expert waste tile rows: 64 experts with 1 micro-sequence of 512 tokens leave each expert
    64 rows of a 128-row tile; permutation moves top_k rows per token through HBM."""
    layout = Layout(dp=8, fsdp=True, micro_batch=1, grad_accum=8)
    work = _work(MOE, 512, 64, 8)
    assert timing._expert_tile_fill(MOE, layout, 512) == 0.5
    assert timing._permutation_bytes_per_token(MOE) == timing.MOE_PERMUTE_PASSES * 2 * 2048 * 8 * 16
    assert timing._expert_tile_fill(MOE, dataclasses.replace(layout, micro_batch=8, grad_accum=1), 512) == 1.0
    full = _step(work, dataclasses.replace(layout, micro_batch=8, grad_accum=1))
    thin = _step(work, layout)
    assert thin.compute > full.compute


def test_attention_kernels_change_time_as_their_measured_rates():
    """cuDNN and FlashAttention-3 run the attention core 595/370 and 648/370 times faster than FA2 on
    Hopper (FA3 paper figure); `auto` is FlashAttention-2, the kernel torch's SDPA tries first."""
    work = {k: _work(LLAMA_8B.model_copy(update={"attention_kernel": k}), 32768, 8, 8) for k in
            ("auto", "flash2", "cudnn", "flash3")}
    layout = Layout(dp=8, fsdp=True, recompute="full")
    compute = {k: _step(w, layout).compute for k, w in work.items()}
    assert compute["auto"] == compute["flash2"]
    assert compute["flash2"] > compute["cudnn"] > compute["flash3"]
    # an accelerator with no catalogued cuDNN figure claims no speed-up
    a100 = {k: _step(_work(LLAMA_8B.model_copy(update={"attention_kernel": k}), 32768, 8, 8, "a100-80gb"),
                     layout).compute for k in ("flash2", "cudnn")}
    assert a100["flash2"] == a100["cudnn"]


def test_named_kernel_is_charged_under_context_parallelism():
    """A named kernel under context parallelism is charged as named (Transformer Engine runs cuDNN per
    ring step); specc's runtime would not pin it there, so validate refuses that spec (R312)."""
    layout = Layout(dp=4, cp=2, fsdp=True, recompute="full")
    compute = {k: _step(_work(LLAMA_8B.model_copy(update={"attention_kernel": k}), 32768, 8, 8), layout).compute
               for k in ("auto", "cudnn")}
    assert compute["auto"] > compute["cudnn"]
    assert timing.attention_kernel(LLAMA_8B.model_copy(update={"attention_kernel": "cudnn"}), Layout(dp=8)) == "cudnn"
