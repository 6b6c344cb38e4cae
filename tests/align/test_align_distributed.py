"""Alignment on the distributed runtime (2 gloo ranks under torchrun, FSDP2): SFT and DPO, each rank
in micro-batches, give the losses of one process on the same global batch in one forward; a stage stopped after N steps resumes from its
DCP checkpoint with the losses the uninterrupted run has; step records carry step_s and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align_helpers import one_cpu_thread, pretrained, run_dir, tokenizer_path  # noqa: F401 (fixtures)
from specc.runtime.evaluate.tiny import write_tiny_alignment_data

pytestmark = pytest.mark.slow  # torchrun, 2 processes, four launches (~50 s)
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def stage_config(run_dir: Path, stage: dict, **extra) -> dict:
    params = {"stage": stage, "init_checkpoint": "pretrain/final", "tokenizer": "tokenize/tokenizer.json",
              "seq_len": 96, "seed": 0, "checkpoint_interval": 3, "precision": "fp32", "recompute": "full", **extra}
    return {"stage": stage["name"], "run_dir": str(run_dir), "params": params}


def launch(config: dict, ranks: int) -> subprocess.CompletedProcess:
    """Run one stage config: `python -m specc.runtime` (1 rank) or torchrun (gloo ranks)."""
    path = Path(config["run_dir"]) / f"{config['stage']}-{ranks}-{len(json.dumps(config))}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    head = [sys.executable] if ranks == 1 else [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}"]
    command = [*head, "-m", "specc.runtime", str(path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and ranks > 1:
        # one rerun: torchrun --standalone can lose its rendezvous port to another process on a busy machine
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def records(run_dir: Path, stage: str) -> list[dict]:
    lines = (run_dir / stage / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "step" in row]


def losses(run_dir: Path, stage: str) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in records(run_dir, stage)}


@pytest.fixture
def data(run_dir):
    return write_tiny_alignment_data(run_dir / "data", seed=0)


def test_sft_on_two_ranks_matches_one_and_resumes(run_dir, data):
    sft = {"type": "sft", "name": "sft", "data": str(data["sft"]), "lr": 3e-3, "epochs": 1, "batch_size": 8}
    launch(stage_config(run_dir, {**sft, "name": "one"}), 1)
    launch(stage_config(run_dir, {**sft, "name": "two"}, micro_batch=2), 2)  # 2 micro-batches per rank
    one, two = losses(run_dir, "one"), losses(run_dir, "two")
    print("sft losses 1 rank:", one, "\n2 ranks:", two)
    for name in ("one", "two"):  # a figure for the report, not an assertion (no timed assertions in tests)
        times = sorted(row["step_s"] for row in records(run_dir, name)[1:])
        print(f"sft step_s on {name} rank(s): median {times[len(times) // 2]:.4f} s")
    assert len(one) >= 4 and one.keys() == two.keys()
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6), step
    start = json.loads((run_dir / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    for row in records(run_dir, "two"):
        assert row["step_s"] > 0 and row["peak_memory_gib"] > 0

    # stopped after 3 steps (a checkpoint), then relaunched without the limit: it resumes at step 3
    stopped = stage_config(run_dir, {**sft, "name": "resumed"}, max_steps=3, micro_batch=2)
    launch(stopped, 2)
    assert sorted(losses(run_dir, "resumed")) == [1, 2, 3]
    (run_dir / "resumed" / "_SUCCESS.json").unlink()
    output = launch(stage_config(run_dir, {**sft, "name": "resumed"}, micro_batch=2), 2).stdout
    assert "resumed from" in output and "step-00000003" in output
    resumed = [row for row in records(run_dir, "resumed")][3:]
    assert [row["step"] for row in resumed] == list(range(4, len(two) + 1))
    for row in resumed:
        assert row["loss"] == two[row["step"]], row["step"]  # bit-identical continuation


def test_dpo_on_two_ranks_matches_one(run_dir, data):
    dpo = {"type": "dpo", "name": "one", "data": str(data["preferences"]), "lr": 3e-3, "epochs": 1, "batch_size": 8,
           "beta": 0.1}
    launch(stage_config(run_dir, dpo, reference_checkpoint="pretrain/final"), 1)
    launch(stage_config(run_dir, {**dpo, "name": "two"}, reference_checkpoint="pretrain/final", micro_batch=2), 2)
    one, two = records(run_dir, "one"), records(run_dir, "two")
    print("dpo losses 1 rank:", [r["loss"] for r in one], "\n2 ranks:", [r["loss"] for r in two])
    assert len(one) == len(two) >= 3
    for a, b in zip(one, two):
        for key in ("loss", "reward_margin", "reward_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_reward_model_and_ppo_run_on_two_ranks(run_dir, data):
    """The reward model and PPO (four FSDP2-sharded models; rollouts decoded with the policy gathered
    once per step, ranks sampling different lengths) finish on 2 ranks and save whole models."""
    rm = {"type": "reward_model", "name": "rm", "data": str(data["preferences"]), "lr": 5e-3, "epochs": 0.5,
          "batch_size": 8}
    launch(stage_config(run_dir, rm), 2)
    ppo = {"type": "ppo", "name": "ppo", "prompts": str(data["prompts"]), "reward_model": "rm", "lr": 1e-4,
           "epochs": 0.2, "rollout_batch": 4, "max_new_tokens": 8, "ppo_epochs": 1}
    launch(stage_config(run_dir, ppo, reward_checkpoint="rm/final"), 2)
    rows = records(run_dir, "ppo")
    assert rows and all("kl" in row and "reward" in row and row["step_s"] > 0 for row in rows)
    from safetensors.torch import load_file

    from specc.runtime.infer.weights import load_model

    assert load_model(run_dir / "ppo" / "final").spec.num_layers == 2  # whole, loadable
    assert "head.weight" in load_file(str(run_dir / "ppo" / "value" / "model.safetensors"))


def test_sft_from_a_hugging_face_directory_reads_only_each_ranks_shards(run_dir, data, pretrained, tokenizer_path):
    """`init_from` a Hugging Face directory on 2 ranks: the model is built on the meta device,
    sharded, and each rank reads only its shards (rank 0 reads about half the weights); the losses
    are those of one process starting from the same weights in specc's own checkpoint."""
    import re

    from specc.runtime.hf.export import export_hf

    hf = run_dir / "hf-init"
    export_hf(pretrained, hf, tokenizer_path, "<|endoftext|>", "<|pad|>")
    sft = {"type": "sft", "name": "sft", "data": str(data["sft"]), "lr": 3e-3, "epochs": 1, "batch_size": 8}
    launch(stage_config(run_dir, {**sft, "name": "own"}), 1)
    output = launch(stage_config(run_dir, {**sft, "name": "hf"}, init_checkpoint=str(hf), micro_batch=2), 2).stdout
    read = re.search(r"weights from .*: ([0-9.]+) MiB read by rank 0 of 2", output)
    assert read, output[-2000:]
    total = sum(p.stat().st_size for p in hf.glob("*.safetensors")) / 2**20
    assert float(read.group(1)) < 0.75 * total, (read.group(1), total)
    own, from_hf = losses(run_dir, "own"), losses(run_dir, "hf")
    assert len(own) >= 4 and own.keys() == from_hf.keys()
    for step in own:
        assert from_hf[step] == pytest.approx(own[step], rel=1e-5, abs=1e-6), step
