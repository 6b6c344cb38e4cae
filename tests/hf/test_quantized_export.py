"""Quantized and GGUF exports, checked with the clients people serve with, on a tiny Llama made
locally and trained 150 steps on synthetic sentences (no downloads):

- int8 (W8A16 per channel), int4 (W4A16 groups, round to nearest) and GPTQ (W4A16 groups,
  calibrated) Hugging Face folders in the compressed-tensors format: `transformers` loads each one
  (the `compressed-tensors` package dequantizes) and computes exactly the logits of specc's model
  with the dequantized weights, and its greedy `generate` equals specc's greedy decode; held-out
  perplexity, measured by `transformers`, stays within the tolerances below of the fp32 export's;
- GGUF files: read back with the `gguf` reader (names, shapes, metadata, tensors equal the model's
  after the documented RoPE row permutation) and loaded by `transformers`' GGUF reader (which
  undoes llama.cpp's conventions) with the model's logits.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import pytest
import torch

from hf_helpers import CHATML, make_hf_model
from specc.runtime.deploy.compressed import pack_int32, quantize_rtn
from specc.runtime.deploy.gptq import gptq_quantize

GROUP = 32
INT8_TOLERANCE = 0.005
"""int8 per channel: held-out perplexity within 0.5% of fp32's (measured +0.007%: 1.65357 -> 1.65369)."""
INT4_TOLERANCE = 0.02
"""int4 / GPTQ, groups of 32: within 2% of fp32's (measured int4 +0.13%, GPTQ +0.016%). This grammar
is easy (perplexity 1.65), so perplexity moves little; the next-token KL divergence from fp32 separates
GPTQ from round to nearest (measured 7.8e-5 vs 3.9e-4 nats per token)."""
ATOL = 1e-4
"""transformers' logits vs specc's model holding the same (dequantized) fp32 weights."""


def test_pack_int32_layout_by_hand():
    """Value i of a row sits at bits 4i (int4) or 8i (int8) of its word, offset to unsigned."""
    q = torch.tensor([[-8, -7, 0, 1, 2, 3, 4, 7, 5]], dtype=torch.int8)
    words = pack_int32(q, 4)
    assert words.shape == (1, 2) and words.dtype == torch.int32
    nibbles = [(int(words[0, 0]) >> (4 * i)) & 0xF for i in range(8)] + [int(words[0, 1]) & 0xF]
    assert nibbles == [v + 8 for v in q[0].tolist()]
    assert int(words[0, 1]) >> 4 == 0  # padding
    bytes_ = pack_int32(torch.tensor([[-128, -1, 0, 127]], dtype=torch.int8), 8)
    assert [(int(bytes_[0, 0]) >> (8 * i)) & 0xFF for i in range(4)] == [0, 127, 128, 255]


def correlated_inputs(tokens: int, features: int, seed: int) -> torch.Tensor:
    """Inputs whose features are correlated (as activations are), so that error compensation matters:
    one fixed mixing of independent normals, `seed` drawing the tokens."""
    fixed = torch.Generator().manual_seed(1234)
    mixing = torch.randn(features, features, generator=fixed) / math.sqrt(features)
    offset = 0.3 * torch.randn(features, generator=fixed)
    return torch.randn(tokens, features, generator=torch.Generator().manual_seed(seed)) @ mixing + offset


def test_gptq_reconstructs_layer_outputs_better_than_rounding():
    """GPTQ minimises the output error ||W X^T - Q X^T|| on the calibration inputs; round to nearest
    does not look at them. Same 4-bit grid, same group size, on held-out inputs too."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 128, generator=generator) * 0.05
    calibration, heldout = correlated_inputs(512, 128, 1), correlated_inputs(512, 128, 2)
    hessian = 2.0 * calibration.t() @ calibration / calibration.shape[0]
    gptq, rtn = gptq_quantize(weight, hessian, 4, GROUP), quantize_rtn(weight, 4, GROUP)
    assert gptq.q.abs().max() <= 7 and gptq.scale.shape == (48, 128 // GROUP)

    def output_error(quantized, inputs):
        return float(((weight - quantized.dequantize()) @ inputs.t()).norm() / (weight @ inputs.t()).norm())

    assert output_error(gptq, calibration) < 0.8 * output_error(rtn, calibration)  # measured 0.068 vs 0.098
    assert output_error(gptq, heldout) < 0.85 * output_error(rtn, heldout)  # measured 0.074 vs 0.097


WORDS = {"det": ["the", "a", "every", "one"], "noun": ["cat", "dog", "bird", "fox", "model", "child"],
         "verb": ["sees", "likes", "follows", "finds", "reads"], "adj": ["quick", "lazy", "small", "red"]}


def sentences(count: int, seed: int) -> str:
    """A small grammar's sentences: structure a tiny model learns in a few hundred steps."""
    rng = random.Random(seed)
    pick = lambda kind: rng.choice(WORDS[kind])  # noqa: E731
    return " ".join(f"{pick('det')} {pick('adj')} {pick('noun')} {pick('verb')} {pick('det')} {pick('noun')}."
                    for _ in range(count))


def divergence(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || quantized) of the next-token distributions, per token."""
    log_p, log_q = reference.float().log_softmax(-1), logits.float().log_softmax(-1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def perplexity(logits_fn, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = logits_fn(windows[:, :-1]).float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    return math.exp(float(nll))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(specc model, tokenizer.json, held-out windows, calibration windows) of a tiny Llama trained on
    one sample of the grammar; held-out and calibration text are other samples."""
    from specc.runtime.infer.weights import load_codec, load_model

    torch.set_num_threads(1)
    directory = make_hf_model(tmp_path_factory.mktemp("tiny") / "llama", "llama", max_shard_size=None,
                              hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    model = load_model(directory)
    codec = load_codec(directory / "tokenizer.json")

    def windows(text: str) -> torch.Tensor:
        ids = torch.tensor(codec.encode(text))
        return ids[: len(ids) // 33 * 33].view(-1, 33)

    train = windows(sentences(2000, seed=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = train[torch.randint(0, len(train), (16,), generator=generator)]
        loss = -model(batch[:, :-1], batch[:, 1:]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), directory / "tokenizer.json", windows(sentences(300, seed=1)), windows(sentences(300, seed=2))[:32]


@pytest.mark.slow  # trains the tiny model (~15 s), GPTQ, and transformers loads four folders
def test_quantized_exports_load_in_transformers(trained, tmp_path):
    import transformers

    from specc.runtime.deploy.compressed import apply_dequantized, quantize_linears_rtn
    from specc.runtime.deploy.gptq import gptq_model
    from specc.runtime.hf.export import export_hf
    from specc.runtime.infer.decode import SamplingSettings, generate

    model, tokenizer, heldout, calibration = trained
    figures = {}
    for method in ("none", "int8", "int4", "gptq"):
        served = copy.deepcopy(model)
        start = time.perf_counter()
        if method == "gptq":
            quantized = gptq_model(served, list(calibration.split(8)), 4, GROUP)
        elif method != "none":
            quantized = quantize_linears_rtn(served, method, GROUP)
            apply_dequantized(served, quantized)
        out = tmp_path / method
        export_hf(model, out, tokenizer, "<|endoftext|>", "<|pad|>", chat_template=CHATML,
                  quantized=None if method == "none" else quantized, quantization=method, group_size=GROUP)
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        load_seconds = time.perf_counter() - start
        config = json.loads((out / "config.json").read_text())
        if method != "none":
            scheme = config["quantization_config"]["config_groups"]["group_0"]["weights"]
            assert scheme["num_bits"] == (8 if method == "int8" else 4)
            assert config["quantization_config"]["ignore"] == ["lm_head"]
        with torch.no_grad():
            torch.testing.assert_close(loaded(heldout[:4]).logits, served(heldout[:4]), atol=ATOL, rtol=0)
            prompt = heldout[0, :8].tolist()
            theirs = loaded.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, 8:].tolist()
            assert theirs == generate(served, prompt, 12, SamplingSettings(), stop_ids=(0,)).tokens
            kl = divergence(loaded(heldout[:, :-1]).logits, model(heldout[:, :-1]))
        figures[method] = {"perplexity": perplexity(lambda t: loaded(t).logits, heldout), "kl": kl,
                           "bytes": (out / "model.safetensors").stat().st_size,
                           "export_s": round(export_seconds, 3), "load_s": round(load_seconds, 3)}
    print("\nquantized exports loaded by transformers:", json.dumps(figures))
    full = figures["none"]["perplexity"]
    assert full < 20  # the model learned the grammar (uniform over 320 tokens would be 320)
    assert figures["int8"]["perplexity"] == pytest.approx(full, rel=INT8_TOLERANCE)
    assert figures["int4"]["perplexity"] == pytest.approx(full, rel=INT4_TOLERANCE)
    assert figures["gptq"]["perplexity"] == pytest.approx(full, rel=INT4_TOLERANCE)
    assert figures["gptq"]["kl"] < 0.5 * figures["int4"]["kl"]
    assert figures["int8"]["kl"] < figures["gptq"]["kl"]
    assert figures["int4"]["bytes"] < figures["int8"]["bytes"] < figures["none"]["bytes"]


@pytest.mark.slow  # transformers' GGUF reader per architecture and type
@pytest.mark.parametrize("architecture", ["llama", "qwen2", "mixtral"])
def test_gguf_reads_back_and_loads_in_transformers(architecture, tmp_path):
    import gguf
    import transformers

    from specc.runtime.hf.gguf_export import export_gguf, rope_interleave
    from specc.runtime.infer.weights import load_codec, load_model

    torch.set_num_threads(1)
    source = make_hf_model(tmp_path / "hf", architecture, max_shard_size=None)
    model = load_model(source).eval()
    spec = model.spec
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    for tensor_type, atol, weight_atol in (("f32", 1e-5, 0), ("f16", 2e-3, 1e-4), ("q8_0", 2e-2, 2e-3)):
        path = export_gguf(model, tmp_path / f"model-{tensor_type}.gguf", source / "tokenizer.json", "<|endoftext|>",
                           "<|pad|>", chat_template=CHATML, tensor_type=tensor_type)
        reader = gguf.GGUFReader(path)
        arch = "qwen2" if architecture == "qwen2" else "llama"
        field = lambda key: reader.get_field(key).contents()  # noqa: E731
        assert field("general.architecture") == arch
        assert (field(f"{arch}.context_length"), field(f"{arch}.block_count"), field(f"{arch}.embedding_length"),
                field(f"{arch}.feed_forward_length"), field(f"{arch}.attention.head_count"),
                field(f"{arch}.attention.head_count_kv"), field(f"{arch}.rope.dimension_count")) == \
            (spec.max_seq_len, spec.num_layers, spec.hidden_size, spec.ffn_hidden_size, spec.num_heads, spec.kv_heads,
             spec.head_size)
        assert field(f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(spec.norm_eps)
        assert field(f"{arch}.rope.freq_base") == pytest.approx(spec.rope_theta)
        assert field("tokenizer.chat_template") == CHATML and field("tokenizer.ggml.model") == "gpt2"
        assert field("tokenizer.ggml.pre") == "gpt-2"
        tokenizer = json.loads((source / "tokenizer.json").read_text())
        assert field("tokenizer.ggml.tokens")[:3] == ["<|endoftext|>", "<|pad|>", "<|im_start|>"]
        assert len(field("tokenizer.ggml.tokens")) == spec.vocab_size
        assert len(field("tokenizer.ggml.merges")) == len(tokenizer["model"]["merges"])
        assert (field("tokenizer.ggml.eos_token_id"), field("tokenizer.ggml.padding_token_id")) == (0, 1)
        if architecture == "mixtral":
            assert (field("llama.expert_count"), field("llama.expert_used_count")) == (4, 2)

        # every tensor, dequantized, is the model's (q/k rows permuted for the llama architecture)
        hf_state = {t.name: torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()).float()
                    for t in reader.tensors}
        names = {"token_embd.weight", "output_norm.weight", *(["output.weight"] if not spec.tie_embeddings else [])}
        for layer in range(spec.num_layers):
            names |= {f"blk.{layer}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                          "ffn_norm")}
            names |= ({f"blk.{layer}.{n}.weight" for n in ("ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                                                           "ffn_down_exps")} if spec.moe else
                      {f"blk.{layer}.{n}.weight" for n in ("ffn_gate", "ffn_up", "ffn_down")})
            names |= {f"blk.{layer}.attn_{n}.bias" for n in "qkv"} if spec.qkv_bias else set()
        assert set(hf_state) == names
        block = model.layers["0"]
        wq = block.attention.wq.weight.detach()
        expected = {"token_embd.weight": model.embeddings.tok_embeddings.weight.detach(),
                    "blk.0.attn_q.weight": rope_interleave(wq, spec.num_heads) if arch == "llama" else wq,
                    "blk.0.attn_v.weight": block.attention.wv.weight.detach(),
                    "blk.0.attn_norm.weight": block.attention_norm.weight.detach()}
        if spec.moe:
            expected["blk.0.ffn_down_exps.weight"] = block.feed_forward.experts.w2.detach().transpose(1, 2)
        for name, value in expected.items():
            assert hf_state[name].shape == value.shape, name
            torch.testing.assert_close(hf_state[name], value, atol=0 if value.ndim == 1 else weight_atol, rtol=0)
        kinds = {t.name: t.tensor_type.name for t in reader.tensors}
        assert kinds["blk.0.attn_norm.weight"] == "F32" and kinds["blk.0.attn_v.weight"] == tensor_type.upper()

        if architecture == "mixtral":
            continue  # transformers' GGUF reader has no Mixtral (llama.cpp reads the expert stacks)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                                   dtype=torch.float32).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(tokens).logits, model(tokens), atol=atol, rtol=0)
        client_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
        text = "The quick brown fox. Answer: cold"
        assert client_tokenizer(text, add_special_tokens=False)["input_ids"] == \
            load_codec(source / "tokenizer.json").encode(text)
        assert client_tokenizer.chat_template == CHATML


def test_gguf_refuses_a_sliding_window_llama_cpp_would_ignore():
    from specc.runtime.hf.gguf_export import GGUFExportError, gguf_architecture
    from specc.spec.model import ModelSpec

    fields = dict(num_layers=1, hidden_size=32, num_heads=4, ffn_hidden_size=64, vocab_size=64, max_seq_len=128)
    assert gguf_architecture(ModelSpec(**fields, sliding_window=128)) == "llama"
    with pytest.raises(GGUFExportError, match="sliding window of 64 tokens within a 128-token context"):
        gguf_architecture(ModelSpec(**fields, sliding_window=64))
    with pytest.raises(GGUFExportError, match="norm 'layernorm'"):
        gguf_architecture(ModelSpec(**fields, norm="layernorm"))


def test_gguf_refuses_a_pre_tokenizer_it_cannot_name(tmp_path):
    from specc.runtime.hf.gguf_export import GGUFExportError, pre_tokenizer_name

    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}, tmp_path) == "gpt-2"
    llama3 = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}}
    with pytest.raises(GGUFExportError, match="pre-tokenizer 'Sequence' is not GPT-2's byte-level split"):
        pre_tokenizer_name(llama3, tmp_path / "tokenizer.json")


@pytest.mark.slow  # GPTQ through the CLI and transformers loading the result (~6 s)
def test_export_command_writes_gptq_and_gguf(tmp_path, capsys):
    """`specc export` of an HF directory: GPTQ calibrated on a text file (loaded by transformers with the
    logits of specc's GPTQ on the same text), and a GGUF file with the chat template's end of turn."""
    import gguf
    import transformers

    from specc.cli import main
    from specc.runtime.deploy.gptq import gptq_model
    from specc.runtime.hf.command import calibration_batches
    from specc.runtime.infer.weights import load_model

    torch.set_num_threads(1)
    source = make_hf_model(tmp_path / "hf", "llama", max_shard_size=None)
    text = tmp_path / "calibration.txt"
    text.write_text(sentences(200, seed=3))
    assert main(["export", str(source), str(tmp_path / "gptq"), "--quantization", "gptq", "--group-size", "16"]) == 1
    assert "pass --calibration FILE.txt" in capsys.readouterr().err
    assert main(["export", str(source), str(tmp_path / "gptq"), "--quantization", "gptq", "--group-size", "16",
                 "--calibration", str(text)]) == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gptq", dtype=torch.float32).eval()
    ours = load_model(source).eval()
    gptq_model(ours, calibration_batches(text, source / "tokenizer.json", 64), 4, 16)
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, ours(tokens), atol=ATOL, rtol=0)
    assert json.loads((tmp_path / "gptq" / "tokenizer_config.json").read_text())["chat_template"] == CHATML

    assert main(["export", str(source), str(tmp_path / "model.gguf"), "--format", "gguf", "--gguf-type", "q8_0",
                 "--chat-template", "chatml"]) == 0
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    assert reader.get_field("tokenizer.ggml.eot_token_id").contents() == 3  # <|im_end|>
    assert reader.get_field("general.file_type").contents() == 7


def test_quantized_hf_export_of_a_moe_model_is_refused(tmp_path):
    """transformers 5.24 cannot load a compressed-tensors Mixtral whose experts stay full precision
    (checked by hand: its expert merge finds no tensors), so the export refuses it as validate does."""
    from specc.runtime.deploy.compressed import quantize_linears_rtn
    from specc.runtime.hf.export import export_hf
    from specc.runtime.train.model import build_model
    from specc.spec.model import ModelSpec

    model = build_model(ModelSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_hidden_size=64, vocab_size=64,
                                  max_seq_len=32, moe={"num_experts": 4, "top_k": 2}), seed=0)
    with pytest.raises(ValueError, match="mixture-of-experts model.*R172"):
        export_hf(model, tmp_path / "out", tmp_path / "tokenizer.json", "<|endoftext|>", None,
                  quantized=quantize_linears_rtn(model, "int8", 32), quantization="int8")


@pytest.mark.slow  # two pretraining steps and transformers (~6 s)
def test_export_command_reads_a_pretraining_checkpoint(tmp_path):
    """`specc export <pretrain>/checkpoints/step-N` (DCP, written by the pretraining loop) with the
    architecture from `--model`: transformers loads the fp32 and int8 folders with the trained
    model's logits (the int8 one with those of its dequantized weights)."""
    import sys

    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from train_helpers import make_shards, tiny_schedule

    from specc.cli import main
    from specc.runtime.deploy.compressed import apply_dequantized, quantize_linears_rtn
    from specc.runtime.train.loop import TrainSettings, train
    from specc.spec.hf_config import read_hf_model
    from specc.spec.model import ModelSpec
    from specc.spec.parallel import ParallelSpec
    from specc.spec.schedule import ScheduleSpec

    torch.set_num_threads(1)
    source = make_hf_model(tmp_path / "hf", "llama")
    spec = ModelSpec.model_validate({**read_hf_model(source).fields, "init_from": str(source)})
    out = tmp_path / "run" / "pretrain"
    summary = train(TrainSettings(spec, ParallelSpec(dp=1, micro_batch=4, precision="fp32"),
                                  ScheduleSpec.model_validate(tiny_schedule(steps=2, lr=1e-2, warmup_steps=0,
                                                                            checkpoint_interval=2)),
                                  out, make_shards(tmp_path / "shards", vocab_size=320)))
    trained = summary["parts"][0].eval()
    [checkpoint] = sorted(out.rglob("step-*"))
    (tmp_path / "model.json").write_text(json.dumps(spec.model_dump(mode="json")))
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    for method in ("none", "int8"):
        assert main(["export", str(checkpoint), str(tmp_path / method), "--model", str(tmp_path / "model.json"),
                     "--tokenizer", str(source / "tokenizer.json"), "--quantization", method]) == 0
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / method, dtype=torch.float32).eval()
        expected = trained if method == "none" else \
            apply_dequantized(copy.deepcopy(trained), quantize_linears_rtn(trained, "int8", 64))
        with torch.no_grad():
            torch.testing.assert_close(loaded(tokens).logits, expected(tokens), atol=ATOL, rtol=0)
