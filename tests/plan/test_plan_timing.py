"""Time model: the stated overlap rules, bubble formula, bandwidth hierarchy, and plan-time warnings."""

from __future__ import annotations

import pytest

from conftest import ROOT
from specc.catalog import load_catalog
from specc.diagnostics.check import check_file
from specc.plan import build_plan
from specc.plan.estimate import Workload, estimate_layout
from specc.plan.layout import Layout, hardware_for
from specc.spec.model import ModelSpec

LLAMA_8B = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                     vocab_size=128256, max_seq_len=8192)


def _work(devices=64, accelerator="h100-sxm", batch=512, model=LLAMA_8B):
    return Workload(model=model, seq_len=8192, batch_sequences=batch, accelerator=load_catalog()[accelerator],
                    devices=devices, devices_per_node=load_catalog()[accelerator].devices_per_node)


def test_pipeline_bubble_is_p_minus_1_over_m_v():
    work = _work()
    for pp, vpp, schedule in ((4, 1, "1f1b"), (4, 2, "interleaved")):
        layout = Layout(dp=16 // pp * 4, pp=pp, vpp=vpp, micro_batch=1, grad_accum=512 // (64 // pp),
                        pp_schedule=schedule, zero_stage=1)
        time = estimate_layout(work, layout).time
        m = layout.grad_accum
        assert time.bubble == pytest.approx(time.compute * (pp - 1) / (m * vpp))


def test_no_tensor_parallel_no_tp_comm_and_tp_costs_time():
    work = _work()
    plain = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True)).time
    tp8 = estimate_layout(work, Layout(dp=8, tp=8, sp=True, micro_batch=1, grad_accum=64, fsdp=True)).time
    assert plain.tp_comm == 0 and tp8.tp_comm > 0


def test_bandwidth_hierarchy():
    hardware = hardware_for(load_catalog()["h100-sxm"], 64, 8, "bf16")
    assert hardware.bandwidth_gbps(8, 1) == 450          # inside one NVLink node
    assert hardware.bandwidth_gbps(8, 8) == 50           # one rank per node: one NIC each
    assert hardware.bandwidth_gbps(64, 1) == 400         # 8 ranks per node share 8 NICs
    tpu = hardware_for(load_catalog()["tpu-v5e"], 512, 8, "bf16")
    assert tpu.fast_domain == 256 and tpu.bandwidth_gbps(256, 1) == tpu.fast_gbps  # ICI inside a slice
    assert tpu.bandwidth_gbps(2, 256) == tpu.slow_gbps                             # DCN between slices


def test_fp8_faster_than_bf16_but_less_than_twice():
    work = _work()
    bf16 = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True)).time
    fp8 = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True, precision="fp8")).time
    assert bf16.compute / 2 < fp8.compute < bf16.compute


def test_recompute_costs_time_and_mfu_below_hfu():
    work = _work()
    none = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True, loss="full")).time
    full = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True, recompute="full", loss="full")).time
    assert full.step_s > none.step_s
    assert full.mfu < full.hfu and none.mfu == pytest.approx(none.hfu)
    assert 0.2 < none.mfu < 0.7
    # the chunked loss (the default) recomputes the head's forward: a little HFU above MFU, a little slower
    chunked = estimate_layout(work, Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True)).time
    assert none.step_s < chunked.step_s < 1.05 * none.step_s and chunked.mfu < chunked.hfu


def test_checkpoint_interval_past_slurm_limit_warns():
    result = check_file(ROOT / "specs" / "llama3-8b-h100x8.yaml",
                        ["~schedule.checkpoint_every", "schedule.checkpoint_interval=100000"])
    assert result.valid, [d.to_text() for d in result.diagnostics]
    plan = build_plan(result.spec).model_dump()
    assert "P202" in {w["code"] for w in plan["warnings"]}


def test_train_days_and_cost_follow_step_time():
    plan = build_plan(check_file(ROOT / "specs" / "llama3-8b-h100x8.yaml").spec).model_dump()
    time = plan["time"]
    assert time["train_days"] == pytest.approx(time["steps"] * time["step_s"] / 86400, rel=1e-4)
    assert time["device_hours"] == pytest.approx(time["train_days"] * 24 * 8, rel=1e-4)
    assert time["cost_usd"] == pytest.approx(time["device_hours"] * time["cost_per_device_hour"], rel=1e-4)


def test_moe_experts_are_replicated_over_tp_in_compute():
    """specc's runtime replicates MoE FFNs over tp: on the same 16 devices, tp 2 leaves each device's
    dense work unchanged (twice the tokens, half of each matrix) but doubles its expert work, so an
    expert-heavy model (experts ~89% of the matmul FLOPs) computes ~1.5-2x longer per step."""
    from specc.plan.timing import _expert_flops_per_token

    moe = ModelSpec(num_layers=8, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                    vocab_size=32000, max_seq_len=4096, moe={"num_experts": 8, "top_k": 2})
    assert _expert_flops_per_token(moe) == 6 * 8 * 2 * 3 * 4096 * 14336
    assert _expert_flops_per_token(LLAMA_8B) == 0
    work = _work(devices=16, batch=64, model=moe)
    tp1 = estimate_layout(work, Layout(dp=16, fsdp=True, micro_batch=1, grad_accum=4)).time.compute
    tp2 = estimate_layout(work, Layout(dp=8, tp=2, fsdp=True, micro_batch=1, grad_accum=8)).time.compute
    assert 1.4 < tp2 / tp1 < 2.0


def test_sliding_window_step_time_charges_the_kernel_and_mfu_the_model():
    """A 1024-token window at seq 8192 saves most of the attention time; the step is charged the
    keys the block kernel computes (HFU above MFU without recompute), MFU only the window's."""
    layout = Layout(dp=64, micro_batch=1, grad_accum=8, fsdp=True)
    causal = estimate_layout(_work(), layout).time
    windowed = estimate_layout(_work(model=LLAMA_8B.model_copy(update={"sliding_window": 1024})), layout).time
    assert windowed.step_s < causal.step_s
    assert windowed.hfu > windowed.mfu
    assert windowed.hardware_flops_per_token > windowed.model_flops_per_token
    assert windowed.model_flops_per_token < causal.model_flops_per_token
