"""`specs/tiny.yaml`'s alignment (sft, reward model, dpo, ppo), eval and deploy stages run
from the params the bundle emitter will put in their config.json, after a (short) pretraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from align_helpers import pretrain_tiny, write_tiny_shards
from align_helpers import codec, one_cpu_thread, tokenizer_path  # noqa: F401 (fixtures)
from specc.diagnostics.check import check_file
from specc.emit.configs.alignment import build_alignment_configs, build_deploy_config
from specc.emit.configs.evaluate import build_eval_config
from specc.runtime.evaluate.tiny import write_bundled_files
from specc.runtime.infer.weights import save_model
from specc.runtime.stages import module_for_config

ROOT = Path(__file__).resolve().parents[2]


def run_stage(name: str, run_dir: Path, params: dict) -> None:
    config = {"stage": name, "run_dir": str(run_dir), "params": json.loads(json.dumps(params))}
    module_for_config(config).run(config)
    assert (run_dir / name / "_SUCCESS.json").exists(), name


def test_bundled_tiny_files_are_current(tmp_path):
    for path in write_bundled_files(tmp_path):
        committed = ROOT / "specs" / "data" / "tiny" / path.relative_to(tmp_path)
        regenerate = "python -m specc.runtime.evaluate.tiny specs/data/tiny"
        assert committed.read_text() == path.read_text(), f"{committed} is stale; regenerate: {regenerate}"


@pytest.mark.slow  # every post-training stage of the tiny spec
def test_tiny_spec_post_training_stages_run(tmp_path, codec, tokenizer_path):
    spec = check_file(ROOT / "specs" / "tiny.yaml").spec
    spec_dir = str(ROOT / "specs")
    run_dir = tmp_path / "run"
    save_model(pretrain_tiny(codec, spec.model, steps=60), run_dir / "pretrain" / "final")
    (run_dir / "tokenize").mkdir()
    shutil.copy(tokenizer_path, run_dir / "tokenize" / "tokenizer.json")
    write_tiny_shards(run_dir / "tokenize" / "shards", codec)
    names = []
    for name, params in build_alignment_configs(spec, spec_dir):
        run_stage(name, run_dir, params)
        names.append(name)
    assert names == ["sft", "rm", "dpo", "ppo"]
    assert json.loads((run_dir / "dpo" / "final" / "provenance.json").read_text())["inputs"]["init_checkpoint"][
        "path"].endswith("sft/final")
    ppo = [json.loads(line) for line in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()
           if '"step"' in line]
    assert all({"reward", "kl", "policy_loss", "value_loss"} <= set(row) for row in ppo)

    run_stage("eval", run_dir, build_eval_config(spec, spec_dir))
    results = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    assert {row["model"] for row in results} == {"pretrain", "sft", "dpo", "ppo"}
    assert {row["task"] for row in results} == {"heldout", "mc_arithmetic", "mc_opposites", "gen_arithmetic"}

    params = build_deploy_config(spec, spec_dir)
    assert params["checkpoint"] == "ppo/final"
    params.update(draft_steps=30, measure_windows=8, speculative_prompts=2, speculative_new_tokens=24)
    run_stage("deploy", run_dir, params)
    assert (run_dir / "deploy" / "hf" / "hf" / "config.json").exists()
    int8 = json.loads((run_dir / "deploy" / "int8" / "hf" / "config.json").read_text())["quantization_config"]
    assert (int8["quant_method"], int8["config_groups"]["group_0"]["weights"]["num_bits"]) == ("compressed-tensors", 8)
    report = json.loads((run_dir / "deploy" / "nf4-speculative" / "report.json").read_text())
    assert report["speculative"]["greedy_identical"] is True
