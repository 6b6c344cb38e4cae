"""SFT, reward model, DPO and PPO run from stage configs on the tiny model, and their metric
moves the right way; a stage killed mid-run resumes to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align_helpers import codec, one_cpu_thread, pretrained, run_dir, tokenizer_path  # noqa: F401 (fixtures)
from specc.runtime.align.chat import load_template
from specc.runtime.align.data import encode_conversation, load_preferences, pack
from specc.runtime.align.reward import load_scalar_model, pair_scores
from specc.runtime.align.stage import run as run_stage
from specc.runtime.evaluate.tiny import write_tiny_alignment_data

ROOT = Path(__file__).resolve().parents[2]


def metrics(run_dir: Path, stage: str) -> list[dict]:
    """The per-step records (the `event: start` record with the stage's total steps comes first)."""
    records = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if "step" in record]


def stage_config(run_dir: Path, stage: dict, init: str = "pretrain/final", **extra) -> dict:
    params = {"stage": stage, "init_checkpoint": init, "tokenizer": "tokenize/tokenizer.json", "seq_len": 96,
              "seed": 0, "checkpoint_interval": 5, **extra}
    return {"stage": stage["name"], "run_dir": str(run_dir), "params": params}


def test_chat_template_masks_only_responses(codec):
    template = load_template("chatml")
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                        {"role": "assistant", "content": "Bye."}]}
    example = encode_conversation(row, template, codec)
    trained = codec.decode([t for t, m in zip(example.tokens, example.loss_mask) if m])
    assert trained == "Hello.<|im_end|>\nBye.<|im_end|>\n"
    assert codec.decode(example.tokens) == template.render(row["messages"], add_generation_prompt=False)
    llama = load_template("llama3").spans([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert [text for text, response in llama if response] == ["b<|eot_id|>"]


def test_packing_fills_rows_and_keeps_masks_aligned(codec):
    template = load_template("chatml")
    rows = [{"prompt": f"Question {i}?", "response": "Answer " * (i % 4 + 1)} for i in range(12)]
    examples = [encode_conversation(r, template, codec) for r in rows]
    packed, mask = pack(examples, 127, codec.pad_id, packing=True)
    unpacked, unpacked_mask = pack(examples, 127, codec.pad_id, packing=False)
    assert packed.shape[0] < unpacked.shape[0] == 12
    assert mask.sum() == unpacked_mask.sum() == sum(sum(e.loss_mask) for e in examples)
    for row, row_mask in zip(packed, mask):
        trained = [int(t) for t, m in zip(row[1:], row_mask) if m]
        assert codec.decode(trained).count("<|im_end|>") >= 1


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_sft_loss_falls_and_records_its_start(run_dir):
    data = write_tiny_alignment_data(run_dir / "data", seed=0)
    stage = {"type": "sft", "name": "sft", "data": str(data["sft"]), "lr": 3e-3, "epochs": 2, "batch_size": 8}
    run_stage(stage_config(run_dir, stage))
    losses = [m["loss"] for m in metrics(run_dir, "sft")]
    steps = json.loads((run_dir / "sft" / "_SUCCESS.json").read_text())["steps"]
    assert len(losses) == steps >= 6
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    provenance = json.loads((run_dir / "sft" / "final" / "provenance.json").read_text())
    assert len(provenance["inputs"]["init_checkpoint"]["sha256"]) == 64


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_dpo_accuracy_rises_above_half(run_dir):
    data = write_tiny_alignment_data(run_dir / "data", seed=0)
    stage = {"type": "dpo", "name": "dpo", "data": str(data["preferences"]), "lr": 3e-3, "epochs": 4,
             "batch_size": 8, "beta": 0.1}
    run_stage(stage_config(run_dir, stage, reference_checkpoint="pretrain/final"))
    rows = metrics(run_dir, "dpo")
    assert rows[0]["reward_accuracy"] == 0.0 and abs(rows[0]["reward_margin"]) < 1e-5  # policy == reference
    assert sum(r["reward_accuracy"] for r in rows[-4:]) / 4 > 0.75
    assert rows[-1]["reward_margin"] > rows[0]["reward_margin"]
    assert (run_dir / "dpo" / "reference_logps.pt").exists()


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_dpo_with_held_reference_matches_precomputed(run_dir):
    data = write_tiny_alignment_data(run_dir / "data", seed=0)
    base = {"type": "dpo", "data": str(data["preferences"]), "lr": 3e-3, "epochs": 1, "batch_size": 8}
    run_stage(stage_config(run_dir, {**base, "name": "pre"}, reference_checkpoint="pretrain/final"))
    run_stage(stage_config(run_dir, {**base, "name": "held", "precompute_reference": False},
                           reference_checkpoint="pretrain/final"))
    for a, b in zip(metrics(run_dir, "pre"), metrics(run_dir, "held")):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_reward_model_then_ppo_raises_reward(run_dir, codec):
    data = write_tiny_alignment_data(run_dir / "data", seed=0)
    rm = {"type": "reward_model", "name": "rm", "data": str(data["preferences"]), "lr": 5e-3, "epochs": 4,
          "batch_size": 8}
    run_stage(stage_config(run_dir, rm))
    # judged on every preference pair by the saved model (one batch of 8 is too noisy to judge by)
    pairs = load_preferences(data["preferences"], load_template("chatml"), codec)
    with torch.no_grad():
        chosen, rejected = pair_scores(load_scalar_model(run_dir / "rm" / "final"), pairs, codec.pad_id, 96)
    correct = (chosen > rejected).float()
    # odd pairs reject a wrong antonym (needs knowledge), even ones "I do not know." (a style the
    # model can learn from 24 examples): chance is 0.5 on both
    easy, hard = float(correct[0::2].mean()), float(correct[1::2].mean())
    print("reward model accuracy: refusal pairs", easy, "wrong-antonym pairs", hard)
    assert easy >= 0.9 and float(correct.mean()) >= 0.7, (easy, hard)
    ppo = {"type": "ppo", "name": "ppo", "prompts": str(data["prompts"]), "reward_model": "rm", "lr": 1e-3,
           "epochs": 4, "rollout_batch": 12, "max_new_tokens": 12, "ppo_epochs": 2, "kl_coef": 0.02}
    run_stage(stage_config(run_dir, ppo, reward_checkpoint="rm/final"))
    rows = metrics(run_dir, "ppo")
    assert len(rows) == 16 and all("kl" in r and "reward" in r for r in rows)
    first, last = sum(r["reward"] for r in rows[:4]) / 4, sum(r["reward"] for r in rows[-4:]) / 4
    assert last > first, (first, last)
    assert (run_dir / "ppo" / "final" / "model.safetensors").exists()


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_killed_stage_resumes_to_the_same_weights(run_dir, tmp_path_factory):
    """SIGKILL a subprocess running SFT after its first checkpoint, rerun it, and compare the
    final weights with an uninterrupted run: resuming must not change the result."""
    data = write_tiny_alignment_data(run_dir / "data", seed=0)
    stage = {"type": "sft", "name": "sft", "data": str(data["sft"]), "lr": 1e-3, "epochs": 12, "batch_size": 24}
    config = stage_config(run_dir, stage)
    config_path = run_dir / "sft-config.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "specc.runtime", str(config_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run_dir / "sft" / "checkpoints"
    deadline = time.time() + 120
    while not any(checkpoints.glob("step-*/checkpoint.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "sft" / "_SUCCESS.json").exists(), "the stage finished before it could be killed"
    assert process.returncode == -signal.SIGKILL
    steps_before = len(metrics(run_dir, "sft"))
    assert 0 < steps_before < 24
    subprocess.run([sys.executable, "-m", "specc.runtime", str(config_path)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = load_file(str(run_dir / "sft" / "final" / "model.safetensors"))

    fresh_dir = tmp_path_factory.mktemp("fresh")
    for part in ("pretrain", "tokenize", "data"):
        os.symlink(run_dir / part, fresh_dir / part)
    run_stage({**config, "run_dir": str(fresh_dir)})
    fresh = load_file(str(fresh_dir / "sft" / "final" / "model.safetensors"))
    assert resumed.keys() == fresh.keys()
    for name in fresh:
        torch.testing.assert_close(resumed[name], fresh[name], rtol=0, atol=0)


@pytest.mark.slow  # the pretrained fixture and an alignment stage end to end
def test_constitutional_data_is_deterministic_resumable_and_feeds_dpo(run_dir):
    data = write_tiny_alignment_data(run_dir / "data", seed=0, num_examples=6)
    stage = {"type": "constitutional", "name": "cai", "prompts": str(data["prompts"]), "rounds": 1,
             "principles": ["Be truthful.", "Be brief."], "output": "dpo", "max_new_tokens": 10, "seed": 3}
    config = stage_config(run_dir, stage)
    run_stage(config)
    traces = (run_dir / "cai" / "traces.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in (run_dir / "cai" / "data.jsonl").read_text().splitlines()]
    assert len(traces) == 6 and 0 < len(rows) <= 6
    first = json.loads(traces[0])
    assert first["rounds"][0]["principle"] in stage["principles"]
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    # Resume after losing the last traces: the file comes out the same.
    (run_dir / "cai" / "_SUCCESS.json").unlink()
    (run_dir / "cai" / "traces.jsonl").write_text("\n".join(traces[:2]) + "\n")
    run_stage(config)
    assert (run_dir / "cai" / "traces.jsonl").read_text().splitlines() == traces
    dpo = {"type": "dpo", "name": "dpo", "data": "cai/data.jsonl", "epochs": 1, "batch_size": 4}
    run_stage(stage_config(run_dir, dpo, reference_checkpoint="pretrain/final"))
    assert (run_dir / "dpo" / "_SUCCESS.json").exists()
