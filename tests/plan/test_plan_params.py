"""Parameter counts of published models and the FLOP conventions of docs/formulas.md section 2."""

from __future__ import annotations

import pytest

from specc.plan.params import count_parameters, flops_per_token, hardware_flops_per_token
from specc.spec.model import ModelSpec


def llama(layers, hidden, ffn, heads, kv, vocab=128256):
    return ModelSpec(num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv, ffn_hidden_size=ffn,
                     vocab_size=vocab, max_seq_len=8192)


def gpt(layers, hidden, heads, vocab=51200, seq=2048):
    return ModelSpec(num_layers=layers, hidden_size=hidden, num_heads=heads, ffn_hidden_size=4 * hidden,
                     activation="gelu", norm="layernorm", position="learned", vocab_size=vocab, max_seq_len=seq,
                     tie_embeddings=True)


MIXTRAL = ModelSpec(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, ffn_hidden_size=14336,
                    vocab_size=32000, max_seq_len=32768, moe={"num_experts": 8, "top_k": 2})


@pytest.mark.parametrize("model, published", [
    (llama(32, 4096, 14336, 32, 8), 8.03e9),       # Llama 3 paper Table 3 / model card: 8.03B
    (llama(80, 8192, 28672, 64, 8), 70.6e9),       # 70.6B
    (llama(126, 16384, 53248, 128, 8), 405.9e9),   # 405.9B (Llama 3 paper: 405B; HF card 405.85B)
], ids=["llama3-8b", "llama3-70b", "llama3-405b"])
def test_llama3_totals(model, published):
    total = count_parameters(model).total
    assert round(total / 1e8) == round(published / 1e8)  # equal to the published 0.1B precision


def test_llama3_8b_exact():
    """8,030,261,248 = HF `LlamaForCausalLM` parameter count for Meta-Llama-3-8B."""
    assert count_parameters(llama(32, 4096, 14336, 32, 8)).total == 8_030_261_248


def test_mixtral_total_and_active():
    counts = count_parameters(MIXTRAL)
    assert round(counts.total / 1e8) == 467    # 46.7B (Jiang et al. 2024)
    assert round(counts.active / 1e8) == 129   # 12.9B active per token
    assert counts.total == 46_702_792_704      # HF Mixtral-8x7B-v0.1 parameter count


def test_gpt3_175b():
    counts = count_parameters(gpt(96, 12288, 96))
    assert round(counts.total / 1e8) == 1746   # ~174.6B with tied embedding and learned positions
    # SC21 closed form P = 12 L h^2 (1 + 13/(12h) + (V+s)/(12 L h)) = 12Lh^2 + 13Lh + (V+s)h counts 9h of
    # linear biases per layer (specc has none) and no final LayerNorm (2h here).
    L, h, V, s = 96, 12288, 51200, 2048
    assert counts.total == 12 * L * h * h + 13 * L * h + (V + s) * h - 9 * L * h + 2 * h


def test_components_add_up():
    counts = count_parameters(MIXTRAL)
    assert counts.total == counts.embedding + counts.non_embedding
    assert counts.experts_total == 32 * 8 * 3 * 4096 * 14336


def test_tied_and_biases_and_moe_frequency():
    base = dict(num_layers=4, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=128, vocab_size=100,
                max_seq_len=32)
    untied = count_parameters(ModelSpec(**base)).total
    tied = count_parameters(ModelSpec(**base, tie_embeddings=True)).total
    assert untied - tied == 100 * 64
    biased = count_parameters(ModelSpec(**base, qkv_bias=True)).total
    assert biased - untied == 4 * (64 + 2 * 2 * 16)
    every_other = count_parameters(ModelSpec(**base, moe={"num_experts": 4, "layer_frequency": 2}))
    assert every_other.moe_layers == 2 and every_other.dense_layers == 2


def test_sc21_flop_conventions():
    """Model FLOPs (non-causal) = 72 B s L h^2 (1 + s/6h + V/12Lh); full recompute = SC21's 96 (...V/16Lh)."""
    L, h, V, s = 96, 12288, 51200, 2048
    flops = flops_per_token(gpt(L, h, 96), s, causal=False)
    assert flops.model == pytest.approx(72 * L * h * h * (1 + s / (6 * h) + V / (12 * L * h)), rel=1e-12)
    assert hardware_flops_per_token(flops, "full") == pytest.approx(96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h)), rel=1e-12)


def test_causal_halves_attention_and_torchtitan_convention():
    """torchtitan: 6N + 12 L H Q T with N excluding the embedding (non-causal T)."""
    model = llama(32, 4096, 14336, 32, 8)
    counts = count_parameters(model)
    non_causal = flops_per_token(model, 8192, causal=False)
    causal = flops_per_token(model, 8192, causal=True)
    n = counts.total - counts.token_embedding
    assert non_causal.model == pytest.approx(6 * n + 12 * 32 * 32 * 128 * 8192 - 6 * (32 * 2 * 4096 + 4096), rel=1e-12)
    assert causal.attention == pytest.approx(non_causal.attention * (8192 + 1) / 2 / 8192)


def test_llmfoundry_mfu_reproduced():
    """llm-foundry MFU = (6 N s + 12 L d s^2) x (seq/s) / (gpus x peak), N incl. embeddings (MPT-1b,
    A100-80GB, 22112 tokens/s/GPU -> 60.15% MFU in their table)."""
    model = gpt(24, 2048, 16, vocab=50368, seq=1024)
    n = 1_313_853_440  # the table's NumParams column: specc's count + the 9h linear biases per layer
    assert count_parameters(model).total + 9 * 2048 * 24 == n
    per_token = 6 * n + 12 * 24 * 2048 * 1024
    assert per_token * 22112 / 312e12 == pytest.approx(0.6015, abs=5e-4)


def test_selective_recompute_adds_attention_core_only():
    flops = flops_per_token(llama(32, 4096, 14336, 32, 8), 8192)
    assert hardware_flops_per_token(flops, "selective") - flops.model == pytest.approx(flops.attention / 3)
    assert hardware_flops_per_token(flops, "none") == flops.model


def test_sliding_window_model_flops_count_the_window_and_executed_flops_the_kernel_blocks():
    """Model FLOPs (MFU) count each query's window exactly; the kernel's query blocks of 256 compute
    every key from the block's first query's window to its last query: 256 + w - 1 keys in steady
    state (here s = 8192 = 32 blocks, w = 1024: block 0 sees 256 keys, blocks 1-3 256(j+1), the
    remaining 28 blocks 1279), and recompute repeats what the kernel runs."""
    L, heads, head_dim, s, w, block = 32, 32, 128, 8192, 1024, 256
    model = llama(L, 4096, 14336, heads, 8).model_copy(update={"sliding_window": w})
    flops = flops_per_token(model, s)
    per_key = 12 * L * heads * head_dim
    assert flops.attention == pytest.approx(per_key * (w * (w + 1) / 2 + (s - w) * w) / s, rel=1e-12)
    pairs = sum(block * block * (j + 1) for j in range(4)) + 28 * block * (block + w - 1)
    assert flops.kernel_attention == pytest.approx(per_key * pairs / s, rel=1e-12)
    assert flops.attention < flops.kernel_attention < per_key * (s + 1) / 2  # dearer than exact, far below causal
    assert hardware_flops_per_token(flops, "none") == pytest.approx(flops.matmul + flops.kernel_attention)
    assert hardware_flops_per_token(flops, "selective") - hardware_flops_per_token(flops, "none") == \
        pytest.approx(flops.kernel_attention / 3)
    plain = flops_per_token(llama(L, 4096, 14336, heads, 8), s)
    assert plain.attention_executed is None and plain.kernel_attention == plain.attention
