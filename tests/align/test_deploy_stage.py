"""The deploy stage: Hugging Face export loads in transformers with the same logits; int8 and
NF4 targets report perplexity within tolerance; a distilled draft gives identical greedy output."""

from __future__ import annotations

import json

import pytest
import torch

from specc.runtime.deploy.export import hf_state_dict
from specc.spec.capabilities import hf_export_incompatibilities
from specc.runtime.deploy.quantize import Int8Linear, load_quantized_state
from specc.runtime.deploy.stage import run as run_deploy
from specc.runtime.infer.weights import load_model
from specc.runtime.train.model import build_model
from safetensors.torch import load_file
from align_helpers import tiny_model_spec
from align_helpers import one_cpu_thread, pretrained, run_dir, tokenizer_path  # noqa: F401 (fixtures)

INT8_TOLERANCE = 0.02
"""int8 per-channel weights may change held-out perplexity by at most 2% on the tiny model."""
NF4_TOLERANCE = 0.15


def deploy_config(run_dir, targets):
    params = {"targets": targets, "checkpoint": "pretrain/final", "tokenizer": "tokenize/tokenizer.json",
              "shard_dir": "tokenize/shards", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>", "seq_len": 64,
              "seed": 0, "measure_windows": 12, "draft_steps": 40, "draft_batch_size": 8, "draft_lr": 3e-3,
              "speculative_prompts": 3, "speculative_prompt_tokens": 16, "speculative_new_tokens": 24}
    return {"stage": "deploy", "run_dir": str(run_dir), "params": params}


@pytest.mark.slow  # the pretrained fixture (~70 s) and the deploy stage
def test_deploy_targets_export_quantize_and_speculate(run_dir):
    draft = tiny_model_spec(num_layers=1, hidden_size=32, ffn_hidden_size=64).model_dump(mode="json")
    targets = [{"name": "full", "format": "hf"},
               {"name": "int8", "format": "safetensors", "quantization": "int8"},
               {"name": "nf4", "format": "safetensors", "quantization": "nf4", "group_size": 32,
                "speculative": {"draft": draft, "num_tokens": 3}}]
    config = deploy_config(run_dir, targets)
    run_deploy(config)
    reports = {t["name"]: json.loads((run_dir / "deploy" / t["name"] / "report.json").read_text()) for t in targets}
    assert reports["int8"]["perplexity_change"] == pytest.approx(0.0, abs=INT8_TOLERANCE)
    assert abs(reports["nf4"]["perplexity_change"]) < NF4_TOLERANCE
    assert reports["int8"]["weight_bytes_served"] < reports["int8"]["weight_bytes_full"]
    assert reports["nf4"]["weight_bytes_served"] < reports["int8"]["weight_bytes_served"]
    speculative = reports["nf4"]["speculative"]
    assert speculative["greedy_identical"] is True
    assert 0.0 < speculative["acceptance_rate"] <= 1.0
    distilled = [json.loads(line) for line in
                 (run_dir / "deploy" / "nf4" / "draft-training" / "metrics.jsonl").read_text().splitlines()]
    assert distilled[-1]["distill_kl"] < distilled[0]["distill_kl"]
    # The served int8 weights reload from the exported folder and give the measured model.
    exported = run_dir / "deploy" / "int8" / "model"
    spec = load_model(run_dir / "pretrain" / "final").spec
    rebuilt = load_quantized_state(build_model(spec, 0), "int8", 64, load_file(str(exported / "model.safetensors")))
    assert load_file(str(exported / "model.safetensors"))["layers.0.attention.wq.qweight"].dtype == torch.int8
    assert isinstance(rebuilt.layers["0"].attention.wq, Int8Linear)
    # Rerunning a finished stage does nothing; a missing report is recomputed identically.
    (run_dir / "deploy" / "_SUCCESS.json").unlink()
    (run_dir / "deploy" / "int8" / "report.json").unlink()
    run_deploy(config)
    again = json.loads((run_dir / "deploy" / "int8" / "report.json").read_text())
    assert again["perplexity_quantized"] == reports["int8"]["perplexity_quantized"]


@pytest.mark.slow  # the pretrained fixture, GPTQ and transformers
def test_quantized_hf_targets_load_in_transformers(run_dir):
    """`format: hf` with int8 or GPTQ: compressed-tensors folders that transformers loads; the perplexity
    the stage reports for the quantized model is the one transformers computes from the folder."""
    import math

    transformers = pytest.importorskip("transformers")
    from specc.runtime.deploy.measure import heldout_windows

    targets = [{"name": "hf-int8", "format": "hf", "quantization": "int8"},
               {"name": "hf-gptq", "format": "hf", "quantization": "gptq", "group_size": 32}]
    run_deploy(deploy_config(run_dir, targets))
    windows = torch.tensor(heldout_windows(run_dir / "tokenize" / "shards", 64, 12))
    for target in targets:
        report = json.loads((run_dir / "deploy" / target["name"] / "report.json").read_text())
        folder = run_dir / "deploy" / target["name"] / "hf"
        config = json.loads((folder / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "compressed-tensors"
        assert not (run_dir / "deploy" / target["name"] / "model").exists()
        loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = loaded(windows[:, :-1]).logits
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        assert math.exp(float(nll)) == pytest.approx(report["perplexity_quantized"], rel=1e-4)
        assert abs(report["perplexity_change"]) < (INT8_TOLERANCE if target["quantization"] == "int8" else NF4_TOLERANCE)
        assert report["weight_bytes_served"] < report["weight_bytes_full"]
        print(target["name"], {k: report[k] for k in ("perplexity_full", "perplexity_quantized", "weight_bytes_served",
                                                      "weight_bytes_full")})


@pytest.mark.slow  # the pretrained fixture and transformers
def test_hf_export_loads_in_transformers_with_equal_logits(run_dir):
    transformers = pytest.importorskip("transformers")
    run_deploy(deploy_config(run_dir, [{"name": "full", "format": "hf"}]))
    folder = run_dir / "deploy" / "full" / "hf"
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = load_model(run_dir / "pretrain" / "final")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = "Question: What is the opposite of hot?\nAnswer: cold"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    from specc.runtime.infer.weights import load_codec
    assert ids == load_codec(run_dir / "tokenize" / "tokenizer.json").encode(text)
    tokens = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tokens).logits, ours(tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # transformers, ~4.6 s
def test_hf_export_with_qkv_bias_and_untied_head_loads(tmp_path, tokenizer_path):
    transformers = pytest.importorskip("transformers")
    from specc.runtime.deploy.export import export_hf

    model = build_model(tiny_model_spec(qkv_bias=True, tie_embeddings=False, rope_theta=500000.0), seed=8).eval()
    with torch.no_grad():
        for block in model.layers.values():
            block.attention.wq.bias.normal_()
    export_hf(model, tmp_path / "hf", tokenizer_path, "<|endoftext|>", "<|pad|>")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokens = torch.randint(0, 384, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tokens).logits, model(tokens), atol=1e-4, rtol=1e-4)


def test_hf_export_refuses_models_no_hf_architecture_expresses():
    spec = tiny_model_spec(position="alibi", norm="layernorm")
    assert hf_export_incompatibilities(spec) == ["position encoding 'alibi' (HF exports use rope)",
                                                 "norm 'layernorm' (HF exports use rmsnorm)"]
    assert hf_export_incompatibilities(tiny_model_spec(moe={"num_experts": 4, "top_k": 1, "num_shared_experts": 1})) \
        == ["shared experts (Mixtral has none)", "top_k 1 (Mixtral renormalises the top-k router weights)"]
    assert hf_export_incompatibilities(tiny_model_spec(sliding_window=16, moe={"num_experts": 4})) == []
    assert "lm_head.weight" not in hf_state_dict(build_model(tiny_model_spec(), 0), tiny_model_spec())


def test_runtime_implements_exactly_what_validate_accepts():
    """validate (R172) and the deploy stage read the same constants: every quantization a format
    accepts has a writer (specc's layout: a quantizer; hf: compressed-tensors), every other one is
    refused by the runtime too."""
    import typing

    from specc.runtime.deploy.compressed import HF_QUANTIZATIONS
    from specc.runtime.deploy.quantize import QUANTIZERS
    from specc.runtime.deploy.stage import deploy_target
    from specc.spec.capabilities import DEPLOY_FORMAT_QUANTIZATIONS
    from specc.spec.deploy import DeployTarget

    assert set(QUANTIZERS) | {"none"} == set(DEPLOY_FORMAT_QUANTIZATIONS["safetensors"])
    assert set(HF_QUANTIZATIONS) | {"none"} == set(DEPLOY_FORMAT_QUANTIZATIONS["hf"])
    formats = typing.get_args(DeployTarget.model_fields["format"].annotation)
    assert set(DEPLOY_FORMAT_QUANTIZATIONS) == set(formats)
    for fmt in formats:
        for method in set(typing.get_args(DeployTarget.model_fields["quantization"].annotation)) - \
                set(DEPLOY_FORMAT_QUANTIZATIONS[fmt]):
            with pytest.raises(ValueError, match="not implemented by the deploy stage"):
                deploy_target(DeployTarget(name="t", format=fmt, quantization=method), {}, None, None)
