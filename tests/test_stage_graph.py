"""The stage graph (`specc.stage_graph`): which stages a spec runs and what each starts from, as
the bundle, the plan and validate all see it."""

from __future__ import annotations

import pytest
from conftest import SPECS

from specc.diagnostics.check import check_file
from specc.emit.stages import build_stages
from specc.plan import build_plan
from specc.stage_graph import pretrains, stage_names

FINE_TUNE = SPECS / "finetune-llama3-8b-h100x8.yaml"


def _bundle_and_plan(spec, spec_dir: str = "/spec-dir"):
    plan = build_plan(spec).model_dump(mode="json")
    return [stage.name for stage in build_stages(spec, plan, spec_dir)], plan


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_plan_lists_exactly_the_bundles_stages(path):
    spec = check_file(path).spec
    stages, plan = _bundle_and_plan(spec)
    assert stages == plan["stages"] == stage_names(spec)
    assert (plan["time"] is None) == (not pretrains(spec))


def test_a_fine_tune_has_no_data_tokenize_or_pretrain_stage_and_starts_from_init_from():
    spec = check_file(FINE_TUNE).spec
    plan = build_plan(spec).model_dump(mode="json")
    stages = {stage.name: stage.config for stage in build_stages(spec, plan, "/spec-dir")}
    assert list(stages) == ["sft", "dpo", "eval", "deploy"]
    base = "/shared/models/Meta-Llama-3-8B"
    assert stages["sft"]["init_checkpoint"] == base
    assert stages["dpo"]["init_checkpoint"] == stages["dpo"]["reference_checkpoint"] == "sft/final"
    assert {config["tokenizer"] for config in stages.values()} == {f"{base}/tokenizer.json"}
    assert stages["eval"]["checkpoints"] == {"base": base, "sft": "sft/final", "dpo": "dpo/final"}
    assert stages["deploy"]["checkpoint"] == "dpo/final" and stages["deploy"]["shard_dir"] is None
    assert plan["layout"] is plan["time"] is plan["memory"] is plan["scaling"] is None


def test_continued_pretraining_keeps_its_pretrain_stage():
    """init_from with a corpus: pretrain starts from the directory, the alignment stage from pretrain."""
    spec = check_file(FINE_TUNE).spec
    corpus = check_file(SPECS / "llama3-8b-h100x8.yaml").spec.corpus
    schedule = spec.schedule.model_copy(update={"steps": 10, "global_batch_size": 8})
    continued = spec.model_copy(update={"corpus": corpus, "schedule": schedule})
    stages, plan = _bundle_and_plan(continued)
    assert stages[:3] == ["data", "tokenize", "pretrain"] and plan["time"]["steps"] == 10
    configs = dict(zip(stages, [s.config for s in build_stages(continued, plan, "/spec-dir")]))
    assert configs["pretrain"]["model"]["init_from"] == "/shared/models/Meta-Llama-3-8B"
    assert configs["sft"]["init_checkpoint"] == "pretrain/final"
    assert configs["eval"]["checkpoints"]["pretrain"] == "pretrain/final"


def test_a_missing_absolute_init_from_is_left_to_launch(tmp_path):
    """validate/plan read the architecture from the spec; launch (check_absolute) refuses the directory."""
    assert check_file(FINE_TUNE).valid
    launched = check_file(FINE_TUNE, check_absolute=True)
    assert [d.code for d in launched.errors] == ["R220"]
