"""`precision: fp8` is charged as the runtime runs it: the blocks' Linear layers at the recipe's fp8
rate (output head, routers, experts and attention in bf16), the casts, the fp8 all-gather of
tensorwise under FSDP; calibrated on torchao's published Llama3-8B speed-ups."""

from __future__ import annotations

import pytest

from specc.catalog import load_catalog
from specc.plan import fp8
from specc.plan.estimate import Workload, estimate_layout
from specc.plan.layout import Layout
from specc.plan.memory import backward_fsdp_memory, pipeline_stage_params
from specc.plan.params import count_parameters, flops_per_token
from specc.spec.model import ModelSpec

LLAMA_8B = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                     vocab_size=128256, max_seq_len=8192)
H100 = load_catalog()["h100-sxm"]


def _torchao_benchmark(precision: str, recipe: str = "tensorwise", model: ModelSpec = LLAMA_8B):
    """torchao/float8/README.md 'Training benchmarks': 8 x H100, seq 8192, batch 1 per GPU, FSDP2,
    torch.compile, per-op selective activation checkpointing (torchtitan)."""
    work = Workload(model=model, seq_len=8192, batch_sequences=8, accelerator=H100, devices=8, devices_per_node=8)
    layout = Layout(dp=8, fsdp=True, micro_batch=1, grad_accum=1, recompute="selective",
                    selective_policy="alternate_matmuls", compile=True, precision=precision, fp8_recipe=recipe)
    return estimate_layout(work, layout)


@pytest.mark.parametrize("recipe, published", [("tensorwise", 1.2503), ("rowwise", 1.1005)])
def test_reproduces_torchaos_published_speedups(recipe, published):
    bf16 = _torchao_benchmark("bf16").time.tokens_per_s
    assert _torchao_benchmark("fp8", recipe).time.tokens_per_s / bf16 == pytest.approx(published, abs=0.01)


def test_only_the_blocks_linears_run_in_fp8():
    flops = flops_per_token(LLAMA_8B, 8192)
    block_weights = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert fp8.converted_flops_per_token(LLAMA_8B, 1) == 6 * block_weights
    assert flops.matmul - fp8.converted_flops_per_token(LLAMA_8B, 1) == pytest.approx(flops.head)  # head in bf16
    # an FFN width the fp8 GEMM cannot take (14330 % 16 = 10): only attention converts
    odd = ModelSpec.model_validate({**LLAMA_8B.model_dump(), "ffn_hidden_size": 14330})
    assert fp8.converted_flops_per_token(odd, 1) == 6 * 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    assert _torchao_benchmark("fp8", model=odd).time.tokens_per_s < _torchao_benchmark("fp8").time.tokens_per_s


def test_moe_routers_and_routed_experts_stay_bf16():
    moe = ModelSpec.model_validate({**LLAMA_8B.model_dump(), "moe": {"num_experts": 8, "top_k": 2, "num_shared_experts": 1}})
    names = [linear.name for linear in fp8.converted_linears(moe, True, 1)]
    assert names == ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]  # attention + the shared expert's FFN
    assert "router" in [linear.name for linear in fp8.block_linears(moe, True)]


def test_tensorwise_gathers_fp8_under_fsdp_rowwise_does_not():
    tensorwise, rowwise = _torchao_benchmark("fp8"), _torchao_benchmark("fp8", "rowwise")
    bf16 = _torchao_benchmark("bf16")
    assert tensorwise.time.dp_comm < rowwise.time.dp_comm == bf16.time.dp_comm
    assert bf16.time.tokens_per_s < rowwise.time.tokens_per_s < tensorwise.time.tokens_per_s
    counts = count_parameters(LLAMA_8B)
    layout = dict(dp=8, fsdp=True, micro_batch=1, grad_accum=1, precision="fp8")
    gathered = {recipe: backward_fsdp_memory(pipeline_stage_params(LLAMA_8B, counts, Layout(**layout, fp8_recipe=recipe), "only"),
                                             Layout(**layout, fp8_recipe=recipe), LLAMA_8B)
                for recipe in ("tensorwise", "rowwise")}
    converted_layer = fp8.converted_params_per_layer(LLAMA_8B, 1, False)
    assert gathered["rowwise"] - gathered["tensorwise"] == pytest.approx(2 * converted_layer)  # 2 layers, 1 B saved each


def test_casts_add_memory_in_backward_and_the_contract_names_the_recipe():
    bf16, tensorwise = _torchao_benchmark("bf16"), _torchao_benchmark("fp8")
    assert tensorwise.memory.contract()["per_device_gib"] >= bf16.memory.contract()["per_device_gib"] - 0.5
    assert tensorwise.layout.contract()["fp8_recipe"] == "tensorwise"
    assert "fp8_recipe" not in bf16.layout.contract()


def test_launch_compares_the_planned_fp8_recipe_with_the_stage():
    """An fp8 plan names its recipe; a pretrain stage that would run another one is reported."""
    import json

    from conftest import SPECS
    from specc.diagnostics.check import check_file
    from specc.emit.stages import build_stages
    from specc.launch.planned import differences, emitted_stage_runs
    from specc.plan import build_plan, plan_json

    overrides = ["parallel.precision=fp8"]
    result = check_file(SPECS / "llama3-8b-h100x8.yaml", overrides)
    plan = json.loads(plan_json(build_plan(result.spec, overrides=overrides)))
    assert plan["layout"]["fp8_recipe"] == "tensorwise"
    stages = emitted_stage_runs(build_stages(result.spec, plan, str(SPECS)))
    assert not [d for d in differences(plan, stages) if d.setting == "parallel.fp8_recipe"]
    plan["layout"]["fp8_recipe"] = "rowwise"
    found = [d for d in differences(plan, stages) if d.setting == "parallel.fp8_recipe"]
    assert [(d.planned, d.runs) for d in found] == [("rowwise", "tensorwise")]
