"""Hugging Face checkpoints in and out, checked with `transformers` itself on tiny random-weight
models made locally (no downloads): for Llama, Mistral (sliding window), Qwen2 (q/k/v biases, tied
head) and Mixtral (MoE), a sharded HF directory loads into specc with the same logits, trains a
few SFT steps with the alignment runtime, exports back to HF (sharded, with the chat template),
and `transformers` gives the same logits and the same greedy generation as specc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_helpers import ARCHITECTURES, make_hf_model
from specc.spec.hf_config import (HFConfigError, architecture_for, hf_config, model_fields, read_hf_model,
                                  unsupported)

ATOL = 2e-5
"""fp32 logits of the same weights through two implementations (summation order differs)."""


def spec_fields(architecture: str) -> dict:
    import transformers

    config_name, _, extra = ARCHITECTURES[architecture]
    from hf_helpers import COMMON

    config = getattr(transformers, config_name)(**{**COMMON, **extra}).to_dict()
    return model_fields(config)


@pytest.mark.slow  # imports transformers (~10 s cold)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_config_round_trips_through_the_export_config(architecture):
    """config.json -> ModelSpec fields -> the config.json the export writes -> the same fields."""
    fields = spec_fields(architecture)
    assert architecture_for(fields) == architecture
    written = hf_config(fields, None, 0)
    assert unsupported(written) == []
    assert model_fields(written) == fields


def test_unsupported_configs_say_why(tmp_path):
    assert unsupported({"model_type": "gpt2"}) == ["model_type 'gpt2' (supported: llama, mistral, qwen2, mixtral)"]
    assert unsupported({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
                        "attention_bias": True}) == ["RoPE scaling 'llama3' (specc computes unscaled RoPE)",
                                                     "attention_bias (Llama's o_proj bias; specc has q/k/v biases only)"]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(HFConfigError, match="has no 'num_attention_heads'"):
        read_hf_model(tmp_path)


def test_export_command_reports_mistakes(tmp_path, capsys):
    from specc.cli import main

    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert f"no directory {tmp_path / 'missing'}" in capsys.readouterr().err
    (tmp_path / "stage" / "final").mkdir(parents=True)
    assert main(["export", str(tmp_path / "stage" / "final"), str(tmp_path / "out"), "--tokenizer", "t.json"]) == 1
    assert "neither a model directory (config.json) nor a training checkpoint" in capsys.readouterr().err


def test_export_refuses_damaged_inputs_before_writing(tmp_path, capsys):
    """A config.json that is JSON but not a ModelSpec, and a --tokenizer that is not a tokenizer.json,
    are one-line errors (exit 1) and nothing is written."""
    from specc.cli import main
    from specc.runtime.infer.weights import save_model
    from specc.runtime.train.model import build_model
    from specc.spec.model import ModelSpec

    final = tmp_path / "run" / "pretrain" / "final"
    spec = ModelSpec(num_layers=1, hidden_size=32, num_heads=2, ffn_hidden_size=64, vocab_size=384, max_seq_len=64)
    save_model(build_model(spec, seed=0), final)
    (tmp_path / "tok.json").write_bytes(b"\x89PNG\r\n")
    out = tmp_path / "out.gguf"
    assert main(["export", str(final), str(out), "--format", "gguf", "--tokenizer", str(tmp_path / "tok.json")]) == 1
    assert "tok.json is not readable JSON" in capsys.readouterr().err
    (final / "config.json").write_text("[1]")
    (tmp_path / "tok.json").write_text('{"model": {"type": "BPE"}}')
    assert main(["export", str(final), str(out), "--format", "gguf", "--tokenizer", str(tmp_path / "tok.json")]) == 1
    assert "config.json: (top level): Input should be a valid dictionary" in capsys.readouterr().err
    assert not out.exists()


def sft_rows(path):
    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": f"The answer is {a + b}."}]} for a in range(4) for b in range(3)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow  # transformers and an SFT stage per architecture, ~10 s each
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_hf_in_sft_hf_out_matches_transformers(architecture, tmp_path):
    import transformers

    from specc.runtime.align.chat import load_template
    from specc.runtime.align.stage import run as run_stage
    from specc.runtime.hf.export import export_hf
    from specc.runtime.infer.decode import SamplingSettings, generate
    from specc.runtime.infer.weights import load_codec, load_model

    torch.set_num_threads(1)
    source = make_hf_model(tmp_path / "hf-in", architecture)
    assert (source / "model.safetensors.index.json").exists()
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    reference = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    ours = load_model(source)
    assert (ours.output.weight is ours.embeddings.tok_embeddings.weight) is (architecture == "qwen2")
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), reference(tokens).logits, atol=ATOL, rtol=0)

    # a few SFT steps through the alignment runtime, starting from the HF directory
    run_dir = tmp_path / "run"
    # the chat template is the directory's own (what validate fills in under model.init_from)
    stage = {"type": "sft", "name": "sft", "data": str(sft_rows(tmp_path / "sft.jsonl")), "lr": 1e-2, "epochs": 1,
             "batch_size": 4, "chat_template": str(source / "tokenizer_config.json")}
    run_stage({"stage": "sft", "run_dir": str(run_dir), "params": {
        "stage": stage, "init_checkpoint": str(source), "tokenizer": str(source / "tokenizer.json"),
        "seq_len": 48, "seed": 0, "checkpoint_interval": 100, "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}})
    tuned = load_model(run_dir / "sft" / "final")
    assert not torch.equal(tuned.layers["0"].attention.wq.weight, ours.layers["0"].attention.wq.weight)
    provenance = json.loads((run_dir / "sft" / "final" / "provenance.json").read_text())
    assert len(provenance["inputs"]["init_checkpoint"]["sha256"]) > 1  # one digest per shard

    template = load_template(str(source / "tokenizer_config.json"))
    assert template.end_of_turn == "<|im_end|>"
    out = tmp_path / "hf-out"
    export_hf(tuned, out, source / "tokenizer.json", "<|endoftext|>", "<|pad|>", chat_template=template.source,
              end_of_turn=template.end_of_turn, max_shard_bytes=30_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert read_hf_model(out).model_type == architecture
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(tokens).logits, tuned(tokens), atol=ATOL, rtol=0)
        torch.testing.assert_close(load_model(out)(tokens), tuned(tokens), atol=0, rtol=0)  # specc reloads it

    # the chat template travels with the tokenizer; greedy generation agrees token for token
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is 2 plus 1?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    codec = load_codec(out / "tokenizer.json")
    assert prompt == codec.encode(template.prompt(messages))
    stop = (codec.eos_id, codec.tokenizer.token_to_id("<|im_end|>"))
    ours_out = generate(tuned, prompt, 16, SamplingSettings(), stop_ids=stop).tokens
    theirs = exported.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt):].tolist()
    assert theirs == ours_out
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template.source

    # `specc export` of the stage's last training checkpoint (DCP) gives the same model
    from specc.cli import main

    checkpoint = sorted((run_dir / "sft" / "checkpoints").glob("step-*"))[-1]
    assert main(["export", str(checkpoint), str(tmp_path / "cli-out"), "--tokenizer", str(source / "tokenizer.json"),
                 "--chat-template", "chatml", "--max-shard-mib", "1"]) == 0
    from_cli = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "cli-out", dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(from_cli(tokens).logits, tuned(tokens), atol=ATOL, rtol=0)


SPEC = """name: finetune
model:
  init_from: {init_from}
alignment:
  - type: sft
    name: sft
    data: sft.jsonl
    init_from: ./{init_from}
schedule:
  lr: 1e-5
  seq_len: 32
  global_batch_size: 8
  steps: 10
  checkpoint_interval: 5
cluster:
  accelerator: cpu
"""


@pytest.mark.slow  # transformers to make the directory, then validate + plan in a fresh interpreter (~5 s)
def test_spec_with_only_init_from_validates_and_plans_without_torch(tmp_path):
    import subprocess
    import sys

    make_hf_model(tmp_path / "mixtral-tiny", "mixtral")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(init_from="mixtral-tiny"))
    code = ("import sys, json; from specc.diagnostics.check import check_file; from specc.cli import main;"
            f"result = check_file({str(spec)!r}); assert result.valid, [d.to_text() for d in result.diagnostics];"
            "m, t = result.spec.model, result.spec.tokenizer;"
            "print(json.dumps([m.num_layers, m.moe.num_experts, m.moe.top_k, m.moe.capacity_factor, m.init_from, t.path,"
            " t.special_tokens, result.spec.alignment[0].chat_template]));"
            f"rc = main(['plan', {str(spec)!r}]);"
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    fields = json.loads(result.stdout.splitlines()[0])
    directory = tmp_path / "mixtral-tiny"
    assert fields == [2, 4, 2, 2.0, str(directory), str(directory / "tokenizer.json"), ["<|endoftext|>", "<|pad|>"],
                      str(directory / "tokenizer_config.json")]


@pytest.mark.slow  # transformers and two pretraining steps (~5 s)
def test_pretraining_starts_from_init_from(tmp_path):
    """The pretrain loop builds the model on the meta device and fills it from `model.init_from`:
    after one step at a tiny learning rate the weights are the HF weights, barely moved."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from train_helpers import make_shards, tiny_schedule

    from specc.runtime.hf.load import load_hf_model
    from specc.runtime.train.loop import TrainSettings, train
    from specc.spec.model import ModelSpec
    from specc.spec.parallel import ParallelSpec
    from specc.spec.schedule import ScheduleSpec

    torch.set_num_threads(1)
    source = make_hf_model(tmp_path / "hf", "mistral")
    fields = read_hf_model(source).fields
    model = ModelSpec.model_validate({**fields, "init_from": str(source)})
    summary = train(TrainSettings(model, ParallelSpec(dp=1, micro_batch=4, precision="fp32"),
                                  ScheduleSpec.model_validate(tiny_schedule(steps=1, lr=1e-6, min_lr=1e-7,
                                                                            warmup_steps=0, checkpoint_interval=1)),
                                  tmp_path / "out", make_shards(tmp_path / "shards")))
    trained = summary["parts"][0].state_dict()
    for name, value in load_hf_model(source).state_dict().items():
        assert (trained[name] - value).abs().max() < 1e-4, name
    assert not torch.equal(trained["layers.0.attention.wq.weight"], load_hf_model(source).layers["0"].attention.wq.weight)


@pytest.mark.slow  # imports transformers
@pytest.mark.parametrize("top_k", [2, 3])
def test_mixtral_aux_loss_weight_means_the_same_loss(top_k):
    """HF's router_aux_loss_coef x its load-balancing loss == specc's aux_loss_weight x the Switch
    loss, with the weight `model_fields` maps (k x the coefficient): the same training objective."""
    import torch.nn.functional as F
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    from specc.runtime.train.moe import switch_aux_loss

    experts, coefficient = 8, 0.02
    logits = torch.randn(37, experts, generator=torch.Generator().manual_seed(top_k))
    probs = logits.softmax(dim=-1)
    choice_major = probs.topk(top_k, dim=-1).indices.t().reshape(-1)  # as MoE.forward orders them
    weight = model_fields({"model_type": "mixtral", "num_attention_heads": 4, "num_hidden_layers": 1, "hidden_size": 8,
                           "intermediate_size": 8, "vocab_size": 8, "max_position_embeddings": 8,
                           "num_local_experts": experts, "num_experts_per_tok": top_k,
                           "router_aux_loss_coef": coefficient})["moe"]["aux_loss_weight"]
    ours = weight * switch_aux_loss(probs, F.one_hot(choice_major, experts), experts)
    theirs = coefficient * load_balancing_loss_func((logits,), experts, top_k)
    torch.testing.assert_close(ours, theirs)
