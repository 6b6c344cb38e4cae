"""Planner memory of alignment stages: which models are held, sharded over which devices."""

from __future__ import annotations

import sys

import pytest

from specc.diagnostics.check import check_file
from specc.plan.alignment_memory import alignment_memory, alignment_stage_memory
from specc.spec.alignment import DPOStage, PPOStage, RewardModelStage, SFTStage


def spec_8b():
    return check_file("specs/llama3-8b-h100x8.yaml").spec


def test_ppo_holds_four_models_and_split_placement_halves_devices():
    spec = spec_8b()
    colocated = alignment_stage_memory(spec, PPOStage(type="ppo", name="ppo", prompts="p.jsonl", reward_model="rm"),
                             devices=8, precision="bf16")
    split = alignment_stage_memory(spec, PPOStage(type="ppo", name="ppo", prompts="p.jsonl", reward_model="rm", colocate=False),
                         devices=8, precision="bf16")
    assert [m["role"] for m in colocated["models"]] == ["policy", "value", "reference", "reward"]
    assert {m["devices"] for m in colocated["models"]} == {8}
    assert [m["devices"] for m in split["models"]] == [4, 4, 4, 4]
    assert "policy + value on 4" in split["placement"]
    policy = colocated["models"][0]
    # 16 bytes per trained parameter (bf16 weights + grads, fp32 master + Adam moments), sharded over 8.
    assert abs(policy["gib_per_device"] - policy["params"] * 16 / 8 / 2**30) < 1e-3
    assert colocated["models"][2]["gib_per_device"] * 8 == pytest.approx(policy["gib_per_device"], rel=1e-3)
    # Split: a device holds only policy + value shards (over 4 devices instead of 8), not the frozen pair.
    trained = sum(m["gib_per_device"] for m in split["models"][:2])
    assert split["per_device_gib"] == pytest.approx(trained + split["activations_gib"] + split["logits_gib"]
                                                    + split["kv_cache_gib"] + 1.0, abs=1e-3)
    assert split["per_device_gib"] > colocated["per_device_gib"]


def test_alignment_is_charged_as_the_runtime_runs_it():
    """The alignment runtime holds every model on one device in fp32: the plan charges that (was: sharded
    over all 8 GPUs in bf16, a program that does not run)."""
    entry = alignment_stage_memory(spec_8b(), DPOStage(type="dpo", name="dpo", data="d.jsonl"))
    assert entry["precision"] == "fp32" and {m["devices"] for m in entry["models"]} == {1}
    assert not entry["fits"]  # 8B x 16 B/param on one 80 GB H100


def test_dpo_reference_is_held_only_when_not_precomputed():
    spec = spec_8b()
    pre = alignment_stage_memory(spec, DPOStage(type="dpo", name="dpo", data="d.jsonl"))
    held = alignment_stage_memory(spec, DPOStage(type="dpo", name="dpo", data="d.jsonl", precompute_reference=False))
    assert [m["role"] for m in pre["models"]] == ["policy"]
    assert [m["role"] for m in held["models"]] == ["policy", "reference"]
    assert held["per_device_gib"] > pre["per_device_gib"]


def test_policy_logits_follow_the_loss_knob():
    """SFT back-propagates the policy's log-probabilities: 12 B per logit of its sequences with the full
    logits; one chunk's working set with the chunked head (the default); no vocabulary loss in a reward model."""
    spec = spec_8b()
    sft = SFTStage(type="sft", name="sft", data="d.jsonl", batch_size=64)
    full = alignment_stage_memory(spec.model_copy(update={"parallel": spec.parallel.model_copy(update={"loss": "full"})}), sft)
    chunked = alignment_stage_memory(spec, sft)
    sequences = 64  # the alignment runtime runs the whole batch on one device
    assert full["logits_gib"] == pytest.approx(12 * sequences * 8192 * 128256 / 2**30, rel=1e-3)
    assert chunked["logits_gib"] < full["logits_gib"] / 40
    assert full["per_device_gib"] - chunked["per_device_gib"] == pytest.approx(
        full["logits_gib"] - chunked["logits_gib"], abs=1e-3)
    reward = alignment_stage_memory(spec, RewardModelStage(type="reward_model", name="rm", data="d.jsonl"))
    assert reward["logits_gib"] == 0


def test_tiny_spec_alignment_memory_is_torch_free():
    entries = alignment_memory(check_file("specs/tiny.yaml").spec)
    assert [e["type"] for e in entries] == ["sft", "reward_model", "dpo", "ppo"]
    assert all(e["fits"] for e in entries)


def test_params_builders_do_not_import_torch():
    import subprocess

    code = ("import sys; from specc.diagnostics.check import check_file; "
            "from specc.emit.configs.alignment import build_alignment_configs, build_deploy_config; "
            "from specc.emit.configs.evaluate import build_eval_config; "
            "from specc.plan.alignment_memory import alignment_memory; "
            "s = check_file('specs/tiny.yaml').spec; build_alignment_configs(s, 'specs'); build_deploy_config(s, 'specs'); "
            "build_eval_config(s, 'specs'); alignment_memory(s); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
