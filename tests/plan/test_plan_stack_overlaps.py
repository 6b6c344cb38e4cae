"""What the planned-only stack knobs change in the step time, each as its source describes it:
Transformer Engine's fp8 casts (`fp8_recipe: delayed/current`), TP communication overlap (userbuffers),
Megatron's overlapped pipeline sends, and DeepSeek's DualPipe schedule (docs/formulas.md section 11)."""

from __future__ import annotations

import dataclasses

import pytest

from specc.catalog import load_catalog
from specc.plan import fp8, timing
from specc.plan.estimate import Workload, estimate_layout
from specc.plan.layout import Layout
from specc.spec.model import ModelSpec

LLAMA_70B = ModelSpec(num_layers=80, hidden_size=8192, num_heads=64, num_kv_heads=8, ffn_hidden_size=28672,
                      vocab_size=128256, max_seq_len=4096)
H100 = load_catalog()["h100-sxm"]
NEMO_70B = Layout(dp=4, tp=4, pp=4, vpp=20, sp=True, zero_stage=1, micro_batch=1, grad_accum=32,
                  pp_schedule="interleaved", precision="fp8", fp8_recipe="delayed", loss="full")
"""NeMo 24.07's Llama 2 70B layout on 64 H100 (tp 4, pp 4, vpp 20, GBS 128), the shape of Llama 3 70B."""


def _time(layout: Layout, model: ModelSpec = LLAMA_70B):
    work = Workload(model=model, seq_len=4096, batch_sequences=128, accelerator=H100, devices=layout.devices,
                    devices_per_node=8)
    return estimate_layout(work, layout).time


def test_transformer_engine_casts_each_tensor_once_and_weights_once_per_step():
    tokens = 4096
    torchao = fp8.cast_bytes_per_token(LLAMA_70B, 4, tokens, False, "tensorwise")
    delayed = fp8.cast_bytes_per_token(LLAMA_70B, 4, tokens, False, "delayed", micro_batches=32)
    current = fp8.cast_bytes_per_token(LLAMA_70B, 4, tokens, False, "current", micro_batches=32)
    assert delayed < current < torchao
    # one cast-transpose (4 B/element) instead of two torchao casts (5 B each) per activation element
    one_step = fp8.cast_bytes_per_token(LLAMA_70B, 4, tokens, False, "delayed", micro_batches=1)
    assert delayed < one_step
    assert fp8.FP8_GEMM_GAIN["delayed"] == fp8.FP8_GEMM_GAIN["current"] == fp8.FP8_GEMM_GAIN["tensorwise"]


def test_transformer_engine_runs_routed_experts_in_fp8():
    mixtral = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                        vocab_size=32000, max_seq_len=4096, moe={"num_experts": 8, "top_k": 2, "capacity_factor": 1.0})
    layout = Layout(dp=8, ep=8, zero_stage=1, micro_batch=1, grad_accum=16, precision="fp8", loss="full")
    tensorwise = _time(dataclasses.replace(layout, fp8_recipe="tensorwise"), mixtral)
    delayed = _time(dataclasses.replace(layout, fp8_recipe="delayed"), mixtral)
    assert delayed.compute < 0.9 * tensorwise.compute  # the experts are most of Mixtral's FLOPs


def test_tp_comm_overlap_hides_all_but_one_chunk():
    exposed = _time(NEMO_70B)
    overlapped = _time(dataclasses.replace(NEMO_70B, tp_comm_overlap=True))
    assert overlapped.tp_comm < exposed.tp_comm
    # at least the one chunk of tp the pipelined collective cannot hide
    assert overlapped.tp_comm >= exposed.tp_comm / NEMO_70B.tp
    assert overlapped.compute == exposed.compute


def test_pp_comm_overlap_leaves_fill_and_flush_sends():
    exposed = _time(NEMO_70B)
    overlapped = _time(dataclasses.replace(NEMO_70B, pp_comm_overlap=True))
    m, p, v = NEMO_70B.grad_accum, NEMO_70B.pp, NEMO_70B.vpp
    send = exposed.pp_comm / (2 * (m + p - 1) * v)
    fill_flush = 2 * (p * v - 1) * send
    assert overlapped.pp_comm == pytest.approx(fill_flush + timing.OVERLAP_COST * (exposed.pp_comm - fill_flush))


def test_dualpipe_bubble_is_deepseeks_table_2():
    per_micro = 3.0
    one_f_one_b = Layout(dp=1, pp=16, grad_accum=64)
    dualpipe = dataclasses.replace(one_f_one_b, pp_schedule="dualpipe")
    assert timing.pipeline_bubble(one_f_one_b, per_micro) == 15 * per_micro  # (p - 1)(F + B)
    # (p/2 - 1)(F&B + B - 3W) with F = 1, B = 2, W = 1 and F&B = F + B: 7 x (3 + 2 - 3)
    assert timing.pipeline_bubble(dualpipe, per_micro) == pytest.approx(7 * 2.0)


def test_interleaved_chunks_sync_their_gradients_under_the_later_chunks_backward():
    """Under the interleaved schedule chunks v-1 ... 1 reduce while the last group of min(p, m)
    micro-batches still runs the chunks below them; chunk 0 is exposed as a stage without pipelining."""
    comm, window, layers = 1.0, 0.1, 20
    plain = dataclasses.replace(NEMO_70B, pp_schedule="1f1b", vpp=1)
    assert timing._chunked_exposed(comm, window, layers, plain) == timing._exposed(comm, window, 1 / layers)
    v, group = NEMO_70B.vpp, min(NEMO_70B.pp, NEMO_70B.grad_accum)
    expected = (timing._exposed(comm / v, window / v, 1.0)
                + timing._exposed(comm * (v - 1) / v, window * group * (v - 1) / v, 0.0))
    assert timing._chunked_exposed(comm, window, layers, NEMO_70B) == pytest.approx(expected)
    assert timing._chunked_exposed(comm, window, layers, NEMO_70B) < timing._chunked_exposed(comm, window, layers, plain)
