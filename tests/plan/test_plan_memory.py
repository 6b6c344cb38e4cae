"""Memory model against its sources: Korthikanti et al. 2022 Fig. 1 (as encoded in Calculon's
validation), ZeRO's bytes per parameter, pipeline in-flight rules, serving memory."""

from __future__ import annotations

import pytest

from specc.catalog import load_catalog
from specc.plan.layout import Layout, hardware_for
from specc.plan.loss_memory import logits_memory
from specc.plan.memory import (GIB, activation_bytes_per_layer, activation_memory, device_memory,
                               in_flight_micro_batches, model_state_memory, pipeline_stage_params)
from specc.plan.params import count_parameters, flops_per_token, hardware_flops_per_token
from specc.plan.serving import estimate_target, kv_cache_bytes
from specc.spec.deploy import DeployTarget
from specc.spec.model import ModelSpec


def korthikanti(layers, hidden, heads):
    return ModelSpec(num_layers=layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden,
                     activation="gelu", norm="layernorm", position="learned", vocab_size=51200, max_seq_len=2048,
                     attention="eager", dropout=0.1, tie_embeddings=True)


FIG1 = [  # model, (t, p, v, b), TP-only no recompute GiB, TP+SP+selective GiB, params+optimizer GiB
    (korthikanti(48, 6144, 64), (8, 1, 1, 4), 59.25, 9.5625, 45.56),
    (korthikanti(96, 12288, 96), (8, 8, 3, 1), 66.84, 12.35, 45.56),
    (korthikanti(105, 20480, 128), (8, 35, 3, 1), 114.02, 23.08, 31.64),
    (korthikanti(128, 25600, 160), (8, 64, 1, 1), 131.25, 26.56, 32.96),
]


def _per_layer_total(model, layout):
    """Korthikanti's figure: per-layer activations x L (first stage: p micro-batches x L/p layers),
    interleaving factor included, without the embedding extras."""
    from specc.plan.memory import activation_bytes_per_layer
    total = activation_bytes_per_layer(model, layout, 2048, False, sp_keeps_gathered=False) * model.num_layers
    if layout.vpp > 1:
        total *= 1 + (layout.pp - 1) / (layout.pp * layout.vpp)
    return total / GIB


@pytest.mark.parametrize("model, shape, none_gib, selective_gib, states_gib", FIG1, ids=["22B", "175B", "530B", "1T"])
def test_korthikanti_figure_1(model, shape, none_gib, selective_gib, states_gib):
    t, p, v, b = shape
    common = dict(dp=1, tp=t, pp=p, vpp=v, micro_batch=b, grad_accum=64,
                  pp_schedule="interleaved" if v > 1 else "1f1b", precision="fp16")
    assert _per_layer_total(model, Layout(**common, recompute="none")) == pytest.approx(none_gib, abs=0.01)
    assert _per_layer_total(model, Layout(**common, recompute="selective", sp=True)) == pytest.approx(selective_gib, abs=0.01)
    # 18 bytes per parameter x 12 L h^2 / (t p): the figure's "parameters + optimizer state".
    assert 18 * 12 * model.num_layers * model.hidden_size**2 / (t * p) / GIB == pytest.approx(states_gib, abs=0.01)


def test_zero_stages_bytes_per_parameter():
    """specc's runtimes keep fp32 masters: 4 + 4 + 8 B/param; ZeRO-1 shards the 8, ZeRO-2 the grads too,
    ZeRO-3 all (d = 8)."""
    model = ModelSpec(num_layers=2, hidden_size=256, num_heads=4, ffn_hidden_size=1024, vocab_size=1000, max_seq_len=128)
    counts = count_parameters(model)
    n = counts.total
    expected = {0: (4, 4, 8), 1: (4, 4, 8 / 8), 2: (4, 4 / 8, 8 / 8), 3: (4 / 8, 4 / 8, 8 / 8)}
    for stage, (w, g, o) in expected.items():
        layout = Layout(dp=8, zero_stage=stage)
        states = model_state_memory(pipeline_stage_params(model, counts, layout, "only"), layout)
        assert states == pytest.approx((w * n, g * n, o * n))
    fsdp = Layout(dp=8, fsdp=True)
    assert sum(model_state_memory(pipeline_stage_params(model, counts, fsdp, "only"), fsdp)) == pytest.approx(16 * n / 8)
    hsdp = Layout(dp=8, fsdp=True, hsdp_replicas=2)
    assert sum(model_state_memory(pipeline_stage_params(model, counts, hsdp, "only"), hsdp)) == pytest.approx(16 * n / 4)


def test_pipeline_in_flight():
    assert in_flight_micro_batches(Layout(dp=1, pp=4, grad_accum=16), "first") == 4
    assert in_flight_micro_batches(Layout(dp=1, pp=4, grad_accum=2), "first") == 2
    assert in_flight_micro_batches(Layout(dp=1, pp=4, grad_accum=16), "last") == 1
    interleaved = Layout(dp=1, pp=4, vpp=2, grad_accum=16, pp_schedule="interleaved")
    assert in_flight_micro_batches(interleaved, "first") == pytest.approx(4 * (1 + 3 / 8))
    assert in_flight_micro_batches(Layout(dp=1, pp=4, grad_accum=16, pp_schedule="gpipe"), "first") == 16


def test_recompute_and_context_parallel_shrink_activations():
    model = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                      vocab_size=128256, max_seq_len=8192)
    none = activation_memory(model, Layout(dp=8), 8192, "only")
    full = activation_memory(model, Layout(dp=8, recompute="full"), 8192, "only")
    cp2 = activation_memory(model, Layout(dp=4, cp=2), 8192, "only")
    assert full < none / 5
    assert cp2 == pytest.approx(none / 2, rel=0.01)


def test_eager_attention_adds_quadratic_term():
    kwargs = dict(num_layers=2, hidden_size=1024, num_heads=16, ffn_hidden_size=4096, vocab_size=1000, max_seq_len=4096)
    flash = activation_memory(ModelSpec(**kwargs, attention="flash"), Layout(dp=1), 4096, "only")
    eager = activation_memory(ModelSpec(**kwargs, attention="eager"), Layout(dp=1), 4096, "only")
    # specc's eager attention keeps the fp32 softmax and its 16-bit cast: 6 bytes per score element.
    assert eager - flash == pytest.approx(2 * (6 * 16 * 4096 * 4096 - 4 * 16 * 4096), rel=1e-9)


def test_pipeline_stage_holds_embedding_and_breakdown_totals():
    model = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                      vocab_size=128256, max_seq_len=8192)
    counts = count_parameters(model)
    first = pipeline_stage_params(model, counts, Layout(dp=1, pp=4), "first")
    last = pipeline_stage_params(model, counts, Layout(dp=1, pp=4), "last")
    assert first.dense - last.dense == pytest.approx(counts.token_embedding - counts.output_head - counts.final_norm)
    hardware = hardware_for(load_catalog()["h100-sxm"], 8, 8, "bf16")
    memory = device_memory(model, counts, Layout(dp=8, fsdp=True), hardware, 8192)
    parts = memory.contract()["breakdown_gib"]
    assert sum(parts.values()) == pytest.approx(memory.total_gib, abs=1e-3)


def test_serving_memory():
    model = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                      vocab_size=128256, max_seq_len=8192)
    # KV cache: 2 x L x kv_heads x head_dim x tokens x batch x bytes (Llama 3 8B: 128 KiB per token in bf16).
    assert kv_cache_bytes(model, 1, 1, "bf16") == 2 * 32 * 8 * 128 * 2 == 131072
    bf16 = estimate_target(model, DeployTarget(name="a", quantization="none", max_batch=1, max_context=1))
    nf4 = estimate_target(model, DeployTarget(name="b", quantization="nf4", max_batch=1, max_context=1))
    assert bf16.weights == pytest.approx(2 * count_parameters(model).total)
    assert nf4.weights < bf16.weights / 2.5
    big = estimate_target(model, DeployTarget(name="c", accelerator="a100-40gb", max_batch=64, max_context=8192))
    assert not big.fits


def _llama8b():
    return ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                     vocab_size=128256, max_seq_len=8192)


def test_peak_is_the_largest_moment_not_the_sum():
    """FSDP without accumulation: gradients are freed by zero_grad, so at the loss (the usual peak with
    the full logits) they are absent; the loss's working set and backward's gathered buffers never coexist."""
    model, hardware = _llama8b(), hardware_for(load_catalog()["h100-sxm"], 8, 8, "bf16")
    counts = count_parameters(model)
    memory = device_memory(model, counts, Layout(dp=8, fsdp=True, micro_batch=1, loss="full"), hardware, 8192)
    assert memory.phase == "loss" and memory.grads == 0 and memory.fsdp_buffers == 0
    assert memory.logits == pytest.approx(12 * 8192 * 128256)
    # with accumulation the sharded gradients live across micro-batches
    accumulating = device_memory(model, counts, Layout(dp=8, fsdp=True, micro_batch=1, grad_accum=4, loss="full"),
                                 hardware, 8192)
    assert accumulating.grads == pytest.approx(4 * counts.total / 8)
    # a huge vocabulary's full loss dominates; a tiny one leaves backward (gathered layers) as the peak
    small_vocab = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                            vocab_size=256, max_seq_len=8192)
    backward = device_memory(small_vocab, count_parameters(small_vocab), Layout(dp=8, fsdp=True, micro_batch=1),
                             hardware, 8192)
    assert backward.phase == "backward" and backward.fsdp_buffers > 0 and backward.logits == 0
    parts = backward.contract()["breakdown_gib"]
    assert sum(parts.values()) == pytest.approx(backward.total_gib, abs=1e-3)


def test_vocab_parallel_logits_unless_tied():
    model = _llama8b()
    tied = ModelSpec(**{**model.model_dump(), "tie_embeddings": True})
    layout = Layout(dp=1, tp=8, sp=True, loss="full")
    assert logits_memory(model, layout, 8192) == pytest.approx(16 * 8192 * 128256 / 8)  # torch's loss_parallel
    assert logits_memory(tied, layout, 8192) == pytest.approx(12 * 8192 * 128256)  # specc replicates a tied head


def test_chunked_loss_holds_one_chunk_of_logits():
    """`parallel.loss: chunked` (the torch runtime's `auto`): the loss holds one chunk's logits (6 B each in
    bf16, 4 in fp32) and sbh-sized hidden-state gradients instead of 12 B per logit of the micro-batch;
    under XLA `auto` stays the full (fused) logits."""
    model = _llama8b()
    tokens, vocab, h = 2 * 8192, 128256, 4096
    full = logits_memory(model, Layout(dp=8, fsdp=True, micro_batch=2, loss="full"), 8192)
    assert full == pytest.approx(12 * tokens * vocab)
    for loss in ("auto", "chunked"):
        chunked = logits_memory(model, Layout(dp=8, fsdp=True, micro_batch=2, loss=loss), 8192)
        assert chunked == pytest.approx(1024 * vocab * 6 + tokens * h * 6 + 12 * tokens)
    assert chunked < full / 20
    fp32 = logits_memory(model, Layout(dp=8, micro_batch=2, precision="fp32", loss_chunk_tokens=512), 8192)
    assert fp32 == pytest.approx(512 * vocab * 4 + tokens * h * 8 + 12 * tokens)
    # vocab-sharded under tp: the chunk's logits /tp, the gathered sequence (sp) added
    tp = logits_memory(model, Layout(dp=1, tp=8, sp=True, micro_batch=2), 8192)
    assert tp == pytest.approx(1024 * vocab / 8 * 6 + tokens * h * 8 + 12 * tokens)
    assert logits_memory(model, Layout(dp=8, micro_batch=2), 8192, xla=True) == pytest.approx(8 * tokens * vocab)
    # the whole device: the step's peak drops by about the logits it no longer holds, and moves off the loss
    counts, hardware = count_parameters(model), hardware_for(load_catalog()["h100-sxm"], 8, 8, "bf16")
    before = device_memory(model, counts, Layout(dp=8, fsdp=True, micro_batch=2, loss="full"), hardware, 8192)
    after = device_memory(model, counts, Layout(dp=8, fsdp=True, micro_batch=2), hardware, 8192)
    assert before.phase == "loss" and after.total_gib < before.total_gib - 15
    # the price: the head's forward again in the loss's backward, 2·V·h FLOPs per token
    flops = flops_per_token(model, 8192)
    assert hardware_flops_per_token(flops, "none", chunked_loss=True) - hardware_flops_per_token(flops, "none") == (
        pytest.approx(2 * vocab * h))


def test_alternate_matmuls_policy_keeps_less_and_recomputes_half_the_matmuls():
    model = _llama8b()
    none, matmuls, alternate = (activation_bytes_per_layer(model, Layout(dp=8, recompute=r, selective_policy=p), 8192, False)
                                for r, p in (("none", "matmuls"), ("selective", "matmuls"),
                                             ("selective", "alternate_matmuls")))
    assert alternate < matmuls < none
    # block input + wq + wv + attention output + w1 + w2 outputs (16-bit) and the fp32 log-sum-exp
    s, h, d = 8192, 4096, 128
    assert alternate == pytest.approx(2 * s * (h + 32 * d + 8 * d + 32 * d + 14336 + h) + 4 * 32 * s)
    flops = flops_per_token(model, 8192)
    extra = hardware_flops_per_token(flops, "selective", "alternate_matmuls", eager_attention=False) - flops.model
    assert extra == pytest.approx(2 * 32 * (h * 8 * d + 32 * d * h + h * 14336))
    assert hardware_flops_per_token(flops, "selective", "matmuls", eager_attention=False) == flops.model


# --- other stacks (`Layout.stack`), device-reported capacity, allocator stream pools ---------------------


@pytest.mark.parametrize("model, shape, none_gib, selective_gib, states_gib", FIG1, ids=["22B", "175B", "530B", "1T"])
def test_megatron_stack_reproduces_korthikanti_figure_1(model, shape, none_gib, selective_gib, states_gib):
    """`stack: megatron` keeps Korthikanti's Table 2 terms as Megatron stores them (sequence parallelism
    divides everything outside the tp region, no `sp_keeps_gathered` switch needed)."""
    from specc.plan.memory import megatron_activation_bytes_per_layer
    t, p, v, b = shape
    common = dict(dp=1, tp=t, pp=p, vpp=v, micro_batch=b, grad_accum=64, stack="megatron",
                  pp_schedule="interleaved" if v > 1 else "1f1b", precision="fp16")
    factor = model.num_layers * (1 + (p - 1) / (p * v) if v > 1 else 1) / GIB
    none = Layout(**common, recompute="none")
    selective = Layout(**common, recompute="selective", sp=True)
    assert megatron_activation_bytes_per_layer(model, none, 2048, False) * factor == pytest.approx(none_gib, abs=0.01)
    assert activation_bytes_per_layer(model, selective, 2048, False) * factor == pytest.approx(selective_gib, abs=0.01)


def test_megatron_state_bytes_follow_the_distributed_optimizer_table():
    """Megatron: 16-bit weights, main gradients (fp32 for bf16, 16-bit for fp16 or NeMo's bf16 grad sync),
    12 B of fp32 master + Adam in the (distributed) optimizer: bf16/fp32 grads 6 + 12/d; at the step
    16-bit gradients get an fp32 copy (the table's 4 + 16/d)."""
    from specc.plan.memory import optimizer_grad_copy, state_bytes
    assert state_bytes(Layout(dp=8, stack="megatron", precision="bf16")) == (2.0, 4.0, 12.0)
    assert state_bytes(Layout(dp=8, stack="megatron", precision="fp16")) == (2.0, 2.0, 12.0)
    assert state_bytes(Layout(dp=8, stack="megatron", precision="fp8", grad_bytes=2.0)) == (2.0, 2.0, 12.0)
    assert state_bytes(Layout(dp=8)) == (4.0, 4.0, 8.0)  # specc: the fp32 parameter is the master
    model = ModelSpec(num_layers=2, hidden_size=256, num_heads=4, ffn_hidden_size=1024, vocab_size=1000, max_seq_len=128)
    counts = count_parameters(model)
    n = counts.total
    distributed = Layout(dp=8, zero_stage=1, stack="megatron", precision="bf16")
    w, g, o = model_state_memory(pipeline_stage_params(model, counts, distributed, "only"), distributed)
    assert (w + g + o) / n == pytest.approx(6 + 12 / 8)
    assert optimizer_grad_copy(o, distributed) == 0  # fp32 main gradients need no copy
    fp16 = Layout(dp=8, zero_stage=1, stack="megatron", precision="fp16")
    w, g, o = model_state_memory(pipeline_stage_params(model, counts, fp16, "only"), fp16)
    assert (w + g + o + optimizer_grad_copy(o, fp16)) / n == pytest.approx(4 + 16 / 8)


def test_transformer_engine_fp8_keeps_weight_workspaces_and_fp8_activations():
    """Under `stack: megatron` and fp8, TE caches each matmul weight's fp8 copy and transpose (2 B/param),
    and saves fp8 GEMM inputs: QKV and FC1 inputs (sbh each) and FC2's input (sbf) at 1 B instead of 2,
    while the output projection adds its own fp8 copy of the attention output (sbav)."""
    from specc.plan.memory import te_fp8_workspace_memory
    model = _llama8b()
    counts = count_parameters(model)
    bf16 = Layout(dp=8, zero_stage=1, stack="megatron", precision="bf16")
    fp8 = Layout(dp=8, zero_stage=1, stack="megatron", precision="fp8")
    matmuls = model.num_layers * (counts.attention_per_layer + counts.dense_ffn_per_layer)
    assert te_fp8_workspace_memory(model, counts, fp8) == pytest.approx(2 * matmuls)
    assert te_fp8_workspace_memory(model, counts, bf16) == 0
    assert te_fp8_workspace_memory(model, counts, Layout(dp=8, precision="fp8")) == 0  # torchao casts per use
    s, h, f = 8192, model.hidden_size, model.ffn_hidden_size
    saved = activation_bytes_per_layer(model, bf16, s, False) - activation_bytes_per_layer(model, fp8, s, False)
    assert saved == pytest.approx(2 * s * h + s * f - s * model.num_heads * model.head_size)


def test_megatron_loss_and_tied_embedding_are_vocab_parallel():
    """Megatron's vocab-parallel cross-entropy: 6 B per local logit, whatever `parallel.loss` says; a tied
    embedding is split by vocabulary too."""
    model = ModelSpec(**{**_llama8b().model_dump(), "tie_embeddings": True})
    layout = Layout(dp=1, tp=8, sp=True, loss="chunked", stack="megatron")
    assert logits_memory(model, layout, 8192) == pytest.approx(6 * 8192 * 128256 / 8)


def test_capacity_is_what_the_device_reports():
    """HBM is binary-sized: an H100 '80 GB' reports 81559 MiB, a TPU v5e 16 GiB (15.48 GiB for programs plus
    XLA's reserve); catalog entries without a reported figure keep the decimal GB."""
    catalog = load_catalog()
    assert catalog["h100-sxm"].memory_gib == pytest.approx(81559 / 1024, abs=0.01)
    assert catalog["tpu-v5e"].memory_gib == 16.0
    assert catalog["h200"].memory_gib == pytest.approx(141e9 / GIB)


def test_fsdp_side_stream_pools_are_reserved_on_gpus():
    """FSDP2's all-gather outputs (2 units in flight, compute dtype) and reduce-scatter inputs (fp32) live in
    their own streams' allocator pools: reserved on top of the default stream's peak, on GPUs only."""
    from specc.plan.memory import fsdp_stream_pools
    model = _llama8b()
    counts = count_parameters(model)
    layout = Layout(dp=8, fsdp=True, micro_batch=1, loss="full")
    params = pipeline_stage_params(model, counts, layout, "only")
    assert params.root > 2 * params.layer  # embedding + head: the largest unit
    assert fsdp_stream_pools(params, layout) == pytest.approx(2 * params.root + 4 * params.root)
    gpu = device_memory(model, counts, layout, hardware_for(load_catalog()["h100-sxm"], 8, 8, "bf16"), 8192)
    cpu = device_memory(model, counts, layout, hardware_for(load_catalog()["cpu"], 8, 1, "bf16"), 8192)
    assert gpu.reserve - cpu.reserve == pytest.approx(fsdp_stream_pools(params, layout), rel=0.01)
    assert fsdp_stream_pools(params, Layout(dp=8, zero_stage=1)) == 0
    assert fsdp_stream_pools(params, Layout(dp=8, fsdp=True, stack="megatron")) == 0


def test_xla_gathers_one_matmul_weight_at_a_time():
    """Under XLA (TPU), GSPMD all-gathers each sharded weight at the dot that reads it: backward holds the
    largest matmul weight and the next one (2 x 2 B) and one gradient (4 B), not FSDP2's whole layer
    plus the root unit; GPU plans keep the per-layer figure."""
    from specc.plan.memory import backward_fsdp_memory, largest_local_matrix
    model = _llama8b()
    layout = Layout(dp=8, fsdp=True, micro_batch=1)
    params = pipeline_stage_params(model, count_parameters(model), layout, "only")
    head = model.vocab_size * model.hidden_size
    assert largest_local_matrix(model, layout) == model.hidden_size * model.ffn_hidden_size
    assert backward_fsdp_memory(params, layout, model, xla=True) == pytest.approx(8 * head)  # the head is larger
    assert backward_fsdp_memory(params, layout, model) == pytest.approx(8 * params.layer + 2 * (params.root + params.head))
    moe = ModelSpec(num_layers=2, hidden_size=512, num_heads=8, ffn_hidden_size=2048, vocab_size=1000, max_seq_len=128,
                    moe={"num_experts": 8, "top_k": 2})
    assert largest_local_matrix(moe, Layout(dp=8, ep=4)) == 8 / 4 * 512 * 2048  # the rank's grouped experts
