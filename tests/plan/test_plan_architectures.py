"""DeepSeek-style architectures (multi-head latent attention, first-k-dense MoE, multi-token
prediction), layer-wise recompute (`recompute_every`) and the MXFP8 recipe, each against values
computed by hand from the formulas docs/formulas.md section 9 cites."""

from __future__ import annotations

import pytest

from specc.catalog import load_catalog
from specc.plan import fp8, mla
from specc.plan.estimate import Workload, estimate_layout
from specc.plan.layout import Layout
from specc.plan.loss_memory import logits_memory
from specc.plan.memory import activation_bytes_per_layer, activation_memory, mtp_activation_memory
from specc.plan.params import count_parameters, flops_per_token, hardware_flops_per_token, recomputed_share
from specc.plan.serving import kv_cache_bytes
from specc.spec import parallel_dims as dims
from specc.spec.model import MLASpec, ModelSpec, MoESpec

DEEPSEEK_V3 = ModelSpec(
    num_layers=61, hidden_size=7168, num_heads=128, ffn_hidden_size=18432, vocab_size=129280, max_seq_len=4096,
    mla=MLASpec(kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128),
    moe=MoESpec(num_experts=256, top_k=8, expert_ffn_hidden_size=2048, num_shared_experts=1, first_k_dense=3),
    mtp_depth=1)
"""DeepSeek-V3 (arXiv:2412.19437 sec. 4.2 and its config.json): 61 layers, h 7168, 128 heads, d_c 512,
d_c' 1536, d_h^R 64, d_h 128, 3 dense layers (FFN 18432), then 256 routed + 1 shared experts of 2048,
top 8, vocabulary 129280, untied head, one MTP module."""

MLA_PER_LAYER = (7168 * 1536 + 1536 * 128 * 192       # W^DQ, W^UQ+W^QR
                 + 7168 * (512 + 64) + 512 * 128 * 256  # W^DKV+W^KR, W^UK+W^UV
                 + 128 * 128 * 7168                     # W^O
                 + 1536 + 512)                          # latent RMSNorms


def test_mla_parameters_per_layer_by_hand():
    counts = count_parameters(DEEPSEEK_V3)
    assert counts.attention_per_layer == MLA_PER_LAYER == 187_107_328
    assert counts.attention_replicated_per_layer == 7168 * 1536 + 7168 * 576 + 1536 + 512


def test_first_k_dense_moe_layer_set():
    assert dims.moe_layer_ids(DEEPSEEK_V3) == list(range(3, 61))
    every_other = DEEPSEEK_V3.model_copy(update={"num_layers": 8, "moe": DEEPSEEK_V3.moe.model_copy(
        update={"layer_frequency": 2, "first_k_dense": 3})})
    assert dims.moe_layer_ids(every_other) == [3, 5, 7]
    assert dims.most_loaded_stage(every_other, 2, 1) == (4, 2)  # layers 4-7: MoE 5 and 7


def test_deepseek_v3_parameter_count_against_the_published_671b_and_37b():
    counts = count_parameters(DEEPSEEK_V3)
    expert, router = 3 * 7168 * 2048, 7168 * 256
    norms = 2 * 7168
    main = (2 * 129280 * 7168 + 61 * (MLA_PER_LAYER + norms) + 3 * 3 * 7168 * 18432
            + 58 * (router + 257 * expert) + 7168)
    assert counts.main_model == main == 671_026_404_352
    assert counts.main_model / 671e9 - 1 == pytest.approx(0.00004, abs=1e-4)  # published: 671B total
    active_main = counts.active - counts.mtp_active
    assert active_main == main - 58 * 248 * expert == 37_552_282_624
    assert active_main / 37e9 - 1 == pytest.approx(0.0149, abs=1e-3)  # published: 37B activated (+1.5%)
    # MTP: norms (3h), M_k (2h x h), one MoE block; embedding and head shared
    assert counts.mtp == 3 * 7168 + 2 * 7168 * 7168 + MLA_PER_LAYER + norms + router + 257 * expert
    # Hugging Face's 14B MTP weights also store the embedding and head again: 11.61 + 1.85 = 13.46B
    assert (counts.mtp + 2 * 129280 * 7168) / 1e9 == pytest.approx(13.46, abs=0.01)


def test_mla_attention_flops_and_kv_cache():
    flops = flops_per_token(DEEPSEEK_V3, 4096, causal=False)
    assert flops.attention == 6.0 * 62 * 128 * (192 + 128) * 4096  # 61 layers + 1 MTP block
    assert mla.kv_cache_elements(DEEPSEEK_V3) == 576  # d_c + d_h^R (GQA-8 of d 128 would be 2048)
    assert kv_cache_bytes(DEEPSEEK_V3, 1, 1000, "bf16") == 576 * 61 * 1000 * 2.0


def test_mtp_charges_its_block_and_a_second_head():
    without = DEEPSEEK_V3.model_copy(update={"mtp_depth": 0})
    with_mtp, base = flops_per_token(DEEPSEEK_V3, 4096), flops_per_token(without, 4096)
    counts = count_parameters(DEEPSEEK_V3)
    mtp_matmul = counts.mtp_active - counts.mtp_norms - mla.latent_norm_params(DEEPSEEK_V3) + 129280 * 7168
    assert with_mtp.matmul - base.matmul == pytest.approx(6.0 * mtp_matmul)
    assert with_mtp.head == 2 * base.head
    layout = Layout(dp=1, micro_batch=1, loss="full")
    assert logits_memory(DEEPSEEK_V3, layout, 4096) == 2 * logits_memory(without, layout, 4096)
    block = activation_bytes_per_layer(DEEPSEEK_V3, layout, 4096, moe_layer=True)
    assert mtp_activation_memory(DEEPSEEK_V3, layout, 4096) == block + 4 * 2 * 4096 * 7168


def test_mla_activations_keep_per_head_keys_values_and_the_latents():
    layout = Layout(dp=1, micro_batch=1)
    dense = DEEPSEEK_V3.model_copy(update={"moe": None, "mtp_depth": 0})
    s, e = 1024, 2
    inside, outside = mla.attention_activation_elements(dense, False)
    assert inside == 128 * 192 * 2 + 128 * 128 * 2  # Q, K (d_qk), V, output (d_v), every head
    assert outside == 2 * (1536 + 512 + 64)
    ffn_and_rest = activation_bytes_per_layer(dense, layout, s, False) - e * s * (inside + outside)
    gqa = dense.model_copy(update={"mla": None})
    assert ffn_and_rest == activation_bytes_per_layer(gqa, layout, s, False) - e * s * (2 * 128 * 56 * 2)


def test_recompute_every_charges_a_share_of_full_recompute():
    model = ModelSpec(num_layers=8, hidden_size=1024, num_heads=16, ffn_hidden_size=4096, vocab_size=32000,
                      max_seq_len=2048)
    flops = flops_per_token(model, 2048)
    full = hardware_flops_per_token(flops, "full")
    half = hardware_flops_per_token(flops, "full", recomputed_share=recomputed_share(8, "full", 2))
    assert half - flops.executed == pytest.approx((full - flops.executed) / 2)
    assert recomputed_share(8, "full", 3) == 2 / 8 and recomputed_share(8, "selective", 2) == 0.0
    layouts = {n: Layout(dp=1, micro_batch=1, recompute="full", recompute_every=n) for n in (1, 2)}
    none = activation_bytes_per_layer(model, Layout(dp=1, micro_batch=1), 2048, False)
    kept_input = 2 * 2048 * 1024
    first = 8 * 2048 + 2 * 2048 * 1024  # token ids and embedding output
    assert activation_memory(model, layouts[1], 2048, "only") == 8 * kept_input + first
    assert activation_memory(model, layouts[2], 2048, "only") == 4 * kept_input + 4 * none + first
    assert layouts[2].contract()["recompute_every"] == 2 and "recompute_every" not in layouts[1].contract()


def test_recompute_every_on_the_most_loaded_pipeline_stage():
    model = ModelSpec(num_layers=10, hidden_size=256, num_heads=4, ffn_hidden_size=512, vocab_size=1024, max_seq_len=256)
    # pp 2: layers 0-4 and 5-9; every 2nd recomputes 1, 3 (rank 0) and 5, 7, 9 (rank 1): the tie keeps rank 0
    assert dims.recomputed_layers_of_most_loaded_stage(model, 2, 1, 2) == (2, 0)


LLAMA_8B = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                     vocab_size=128256, max_seq_len=8192)


def _torchtitan_b200(precision: str, recipe: str = "tensorwise"):
    """torchtitan docs/mxfp8.md 'Performance': Llama3-8B, 8 x B200, seq 8192, batch 1, FSDP2,
    torch.compile, per-op SAC."""
    work = Workload(model=LLAMA_8B, seq_len=8192, batch_sequences=8, accelerator=load_catalog()["b200"],
                    devices=8, devices_per_node=8)
    layout = Layout(dp=8, fsdp=True, micro_batch=1, grad_accum=1, recompute="selective",
                    selective_policy="alternate_matmuls", compile=True, precision=precision, fp8_recipe=recipe)
    return estimate_layout(work, layout)


def test_mxfp8_reproduces_torchtitans_b200_speedup_and_gathers_in_bf16():
    bf16 = _torchtitan_b200("bf16")
    mx = _torchtitan_b200("fp8", "mxfp8")
    assert mx.time.tokens_per_s / bf16.time.tokens_per_s == pytest.approx(1.200, abs=0.01)  # published +20.0%
    rowwise = _torchtitan_b200("fp8", "rowwise")
    assert mx.memory.fsdp_buffers == rowwise.memory.fsdp_buffers  # bf16 all-gathers, like rowwise
    assert fp8.cast_bytes_per_token(LLAMA_8B, 1, 8192, False, "mxfp8") < fp8.cast_bytes_per_token(LLAMA_8B, 1, 8192, False)


def test_launch_compares_the_planned_recompute_every_with_the_stage():
    """A plan that recomputes 1 block in 2 and a pretrain stage that would recompute another share differ."""
    import json

    from conftest import SPECS
    from specc.diagnostics.check import check_file
    from specc.emit.stages import build_stages
    from specc.launch.planned import differences, emitted_stage_runs
    from specc.plan import build_plan, plan_json

    overrides = ["parallel.recompute=full", "+parallel.recompute_every=2"]
    result = check_file(SPECS / "llama3-8b-h100x8.yaml", overrides)
    plan = json.loads(plan_json(build_plan(result.spec, overrides=overrides)))
    assert plan["layout"]["recompute_every"] == 2
    stages = emitted_stage_runs(build_stages(result.spec, plan, str(SPECS)))
    assert not [d for d in differences(plan, stages) if d.setting == "parallel.recompute_every"]
    del plan["layout"]["recompute_every"]
    found = [d for d in differences(plan, stages) if d.setting == "parallel.recompute_every"]
    assert [(d.planned, d.runs) for d in found] == [(1, 2)]
