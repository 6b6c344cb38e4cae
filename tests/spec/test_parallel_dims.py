"""specc.spec.parallel_dims: one set of layout rules for validate, the planner and the runtimes.

Each test pins a disagreement found between the phases (the spec validated, or the plan charged
a layout, that the runtime refused or ran differently).
"""

from __future__ import annotations

import pytest

from conftest import SPECS
from specc.diagnostics.check import check_file
from specc.plan import build_plan
from specc.spec import parallel_dims
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec


def _codes(name: str, *overrides: str) -> dict[str, list[str]]:
    result = check_file(SPECS / name, list(overrides))
    found: dict[str, list[str]] = {}
    for diagnostic in result.diagnostics:
        found.setdefault(diagnostic.code, []).append(diagnostic.to_text())
    return found


def test_replicated_kv_heads_are_a_validate_error():
    """Was: validate passed and `apply_tp` refused at start-up (kv heads are split, not replicated)."""
    found = _codes("llama3-8b-h100x8.yaml", "model.num_kv_heads=4", "+parallel.tp=8")
    assert any("num_kv_heads (4) is not divisible by tp (8)" in text for text in found["R103"])


def test_tied_embeddings_cannot_be_pipelined():
    """Was: validate passed and `split_pipeline` refused (the GPT-3 example spec itself)."""
    found = _codes("llama3-70b-h100x64.yaml", "+model.tie_embeddings=true", "+parallel.pp=4")
    assert any("tie_embeddings cannot be pipelined" in text for text in found["R104"])


def test_pipeline_on_tpu_is_a_validate_error():
    """Was: the TPU runtime's mesh refused pp, cp and ep that validate accepted."""
    found = _codes("llama2-7b-tpu-v5p.yaml", "+parallel.pp=2")
    assert any("pp = 2: the tpu runtime" in text for text in found["R195"])


def test_expert_parallelism_lives_inside_the_fsdp_shard_axis():
    """Was: validate accepted ep dividing dp x cp while the runtime's mesh needs ep | dp / hsdp_replicas."""
    found = _codes("mixtral-8x7b-h100x128.yaml", "+parallel.hsdp_replicas=32")
    assert any("ep (8) must divide the FSDP shard degree dp / hsdp_replicas = 128 / 32 = 4" in text
               for text in found["R107"])


def test_zero_stage_is_charged_as_the_runtime_runs_it():
    """Was: ZeRO-1 charged (unsharded gradients) while FSDP2 ran ZeRO-2."""
    spec = check_file(SPECS / "llama3-8b-h100x8.yaml", ["parallel.fsdp=false", "+parallel.zero_stage=1"]).spec
    plan = build_plan(spec).model_dump()
    assert plan["layout"]["zero_stage"] == 2
    assert "R195" in _codes("llama3-8b-h100x8.yaml", "parallel.fsdp=false", "+parallel.zero_stage=1")


def test_resolve_spells_out_the_arithmetic():
    with pytest.raises(parallel_dims.LayoutError, match=r"dp x tp x pp x cp = 2 x 2 x 1 x 1 = 4, but the cluster has 8"):
        parallel_dims.resolve(ParallelSpec(dp=2, tp=2), 8)
    dims = parallel_dims.resolve(ParallelSpec(fsdp=True, hsdp_replicas=2, tp=2, ep=2), 16)
    assert (dims.dp_replicate, dims.dp_shard, dims.edp, dims.world_size) == (2, 4, 4, 16)


def test_most_loaded_stage_follows_the_runtime_split():
    """126 layers on 16 stages: the middle stages hold 8 (Llama 3 405B); MoE every 2nd layer."""
    model = ModelSpec(num_layers=126, hidden_size=64, num_heads=4, ffn_hidden_size=64, vocab_size=64,
                      max_seq_len=64, moe={"num_experts": 4, "layer_frequency": 2})
    assert parallel_dims.most_loaded_stage(model, 16, 1) == (8, 4)
    ranges = parallel_dims.pipeline_layer_ranges(126, 16)
    assert [len(r) for r in ranges][:2] == [7, 8] and sum(len(r) for r in ranges) == 126
    assert parallel_dims.moe_layer_ids(model)[:3] == [1, 3, 5]
