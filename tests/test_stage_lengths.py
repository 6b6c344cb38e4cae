"""One sequence length per alignment stage: what validate checks, the plan charges and the
stage's params carry (the runtime reads only the params) come from `stage_seq_len`."""

from __future__ import annotations

import pytest

from specc.diagnostics.check import check_file
from specc.plan.alignment_memory import alignment_memory
from specc.emit.configs.alignment import build_alignment_configs
from specc.spec.alignment import stage_seq_len


@pytest.mark.parametrize("overrides, expected", [
    ([], [128, 128, 128, 128]),                                    # schedule.seq_len
    (["+alignment.0.seq_len=256", "+alignment.2.seq_len=64"], [256, 128, 64, 128]),
    (["model.max_seq_len=96", "schedule.seq_len=96", "~deploy"], [96, 96, 96, 96]),
])
def test_plan_and_params_use_the_stage_length(overrides, expected):
    spec = check_file("specs/tiny.yaml", overrides).spec
    assert spec is not None
    lengths = [stage_seq_len(s, spec.schedule.seq_len, spec.model.max_seq_len) for s in spec.alignment]
    assert lengths == expected
    assert [params["seq_len"] for _, params in build_alignment_configs(spec, "/specs")] == expected
    assert [stage["seq_len"] for stage in alignment_memory(spec)] == expected


def test_a_stage_longer_than_the_model_is_rejected_not_capped():
    """Before: validate passed, the plan capped at max_seq_len (256) and the runtime used 100000."""
    result = check_file("specs/tiny.yaml", ["+alignment.0.seq_len=100000"])
    assert not result.valid
    assert [(d.code, d.path) for d in result.errors] == [("R151", "alignment[0].seq_len")]


def test_alibi_pretraining_longer_than_the_model_caps_alignment():
    spec = check_file("specs/tiny.yaml", ["model.position=alibi", "schedule.seq_len=512",
                                          "deploy.targets.0.format=safetensors", "deploy.targets.1.format=safetensors"]).spec
    assert spec is not None
    assert {params["seq_len"] for _, params in build_alignment_configs(spec, "/specs")} == {256}


def test_constitutional_stage_generates_within_the_model_context():
    spec = check_file("specs/tiny.yaml", ["alignment.3={type: constitutional, name: cai, prompts: p.jsonl, "
                                          "principles: [be kind], max_new_tokens: 32}"]).spec
    assert spec is not None
    assert build_alignment_configs(spec, "/specs")[-1][1]["seq_len"] == spec.model.max_seq_len == 256
