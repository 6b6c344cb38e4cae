"""Planner memory of alignment stages: which models are held, sharded over which devices."""

from __future__ import annotations

import sys

import pytest

from specc.diagnostics.check import check_file
from specc.plan.alignment_memory import alignment_memory, alignment_stage_memory
from specc.spec.alignment import DPOStage, PPOStage, SFTStage


def spec_8b():
    return check_file("specs/llama3-8b-h100x8.yaml").spec


def test_ppo_holds_four_models_colocated_and_sharded():
    spec = spec_8b()
    entry = alignment_stage_memory(spec, PPOStage(type="ppo", name="ppo", prompts="p.jsonl", reward_model="rm",
                                                  rollout_batch=64), devices=8, precision="bf16")
    assert [m["role"] for m in entry["models"]] == ["policy", "value", "reference", "reward"]
    assert {m["devices"] for m in entry["models"]} == {8}
    policy, reference = entry["models"][0], entry["models"][2]
    # 16 bytes per trained parameter (fp32 sharded weights + grads + Adam moments), sharded over 8;
    # a frozen model keeps its fp32 shard only (4 B/param)
    assert policy["gib_per_device"] == pytest.approx(policy["params"] * 16 / 8 / 2**30, abs=1e-3)
    assert reference["gib_per_device"] * 4 == pytest.approx(policy["gib_per_device"], rel=1e-3)
    assert "FSDP2-sharded over the same 8" in entry["placement"] and entry["step_s"] > 0


def test_alignment_is_charged_as_the_runtime_runs_it():
    """The alignment runtime shards every model over all 8 GPUs with FSDP2 and computes in bf16: the plan
    charges that (was: one process holding everything on one device in fp32)."""
    spec = spec_8b()
    dpo = DPOStage(type="dpo", name="dpo", data="d.jsonl", batch_size=8, seq_len=2048)
    entry = alignment_stage_memory(spec, dpo)
    assert entry["precision"] == "bf16" and entry["devices"] == 8 and {m["devices"] for m in entry["models"]} == {8}
    assert entry["fits"]  # 8B x 16 B/param over 8 H100s
    assert not alignment_stage_memory(spec, dpo, devices=1)["fits"]  # 8B x 16 B/param on one
    # each rank runs its whole share of the batch in one forward: 32 pairs of 8k tokens do not fit
    assert not alignment_stage_memory(spec, DPOStage(type="dpo", name="dpo", data="d.jsonl"))["fits"]
    # the trained model is priced as the pretraining planner prices the same FSDP layout
    from specc.plan.alignment_memory import training_estimate

    estimate = training_estimate(spec, dpo, 8, "bf16")
    assert estimate.layout.fsdp and estimate.layout.micro_batch == 8 * 2 // 8
    assert entry["per_device_gib"] == pytest.approx(estimate.memory.total_gib, abs=1e-3)


def test_recompute_shrinks_alignment_activations():
    spec = spec_8b()
    sft = SFTStage(type="sft", name="sft", data="d.jsonl", batch_size=64)
    for_mode = {mode: alignment_stage_memory(spec.model_copy(update={"parallel": spec.parallel.model_copy(
        update={"recompute": mode})}), sft) for mode in ("none", "selective", "full")}
    assert for_mode["full"]["activations_gib"] < for_mode["selective"]["activations_gib"] \
        < for_mode["none"]["activations_gib"]
    assert for_mode["full"]["step_s"] > for_mode["none"]["step_s"]  # the recompute's extra forward


def test_fp32_spec_keeps_alignment_in_fp32_and_v100_has_no_bf16():
    from specc.spec.capabilities import capabilities_for
    from specc.catalog import load_catalog

    assert capabilities_for(load_catalog()["v100-32gb"]).alignment_precision("fp16") == "fp32"
    assert capabilities_for(load_catalog()["h100-sxm"]).alignment_precision("fp8") == "bf16"
    assert capabilities_for(load_catalog()["h100-sxm"]).alignment_precision("fp32") == "fp32"


def test_dpo_reference_is_held_only_when_not_precomputed():
    spec = spec_8b()
    pre = alignment_stage_memory(spec, DPOStage(type="dpo", name="dpo", data="d.jsonl"))
    held = alignment_stage_memory(spec, DPOStage(type="dpo", name="dpo", data="d.jsonl", precompute_reference=False))
    assert [m["role"] for m in pre["models"]] == ["policy"]
    assert [m["role"] for m in held["models"]] == ["policy", "reference"]
    assert held["per_device_gib"] > pre["per_device_gib"]


def test_policy_logits_follow_the_loss_knob():
    """SFT back-propagates the policy's log-probabilities: 12 B per logit of its sequences with the full
    logits; one chunk's working set with the chunked head (the default)."""
    spec = spec_8b()
    sft = SFTStage(type="sft", name="sft", data="d.jsonl", batch_size=64)
    full = alignment_stage_memory(spec.model_copy(update={"parallel": spec.parallel.model_copy(update={"loss": "full"})}), sft)
    chunked = alignment_stage_memory(spec, sft)
    sequences = spec.parallel.micro_batch  # each of the 8 ranks runs its eighth in micro-batches
    assert full["logits_gib"] == pytest.approx(12 * sequences * 8192 * 128256 / 2**30, rel=1e-3)
    # the chunked head's working set is small enough that the peak falls in backward (no logits alive)
    assert chunked["logits_gib"] < full["logits_gib"] / 40
    assert full["per_device_gib"] > chunked["per_device_gib"] + 1.0


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
