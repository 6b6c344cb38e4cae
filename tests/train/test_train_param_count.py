"""The runtime's model has exactly the parameter count the planner computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from train_helpers import tiny_model

params = pytest.importorskip("specc.plan.params")

VARIANTS = {
    "dense_gqa_rope_tied": tiny_model(tie_embeddings=True),
    "mha_untied": tiny_model(num_kv_heads=None),
    "mqa": tiny_model(num_kv_heads=1),
    "learned_layernorm_gelu": tiny_model(position="learned", norm="layernorm", activation="gelu"),
    "relu_qkv_bias_alibi": tiny_model(activation="relu", qkv_bias=True, position="alibi"),
    "sinusoidal_head_dim": tiny_model(position="sinusoidal", head_dim=8),
    "learned_tied_layernorm": tiny_model(position="learned", norm="layernorm", tie_embeddings=True),
    "moe_every_layer": tiny_model(moe={"num_experts": 4, "top_k": 2}),
    "moe_shared_wide_alternate": tiny_model(num_layers=4, moe={"num_experts": 8, "top_k": 1, "num_shared_experts": 2,
                                                               "expert_ffn_hidden_size": 48, "layer_frequency": 2}),
    "moe_gelu_tied": tiny_model(activation="gelu", tie_embeddings=True, moe={"num_experts": 2, "top_k": 1}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_equals_planner(name):
    from specc.runtime.train.model import build_model, num_parameters
    from specc.spec.model import ModelSpec

    spec = ModelSpec.model_validate(VARIANTS[name])
    model = build_model(spec, seed=0)
    count = params.count_parameters(spec)
    assert num_parameters(model) == count.total
    if spec.moe is None:
        assert count.active == count.total
    else:
        # active = everything except the routed experts a token does not visit
        experts = [m.experts for m in model.modules() if m.__class__.__name__ == "MoE"]
        per_expert = sum(p.numel() for p in experts[0].parameters()) // spec.moe.num_experts
        inactive = len(experts) * (spec.moe.num_experts - spec.moe.top_k) * per_expert
        assert count.active == count.total - inactive


def test_tiny_spec_model_count():
    from specc.runtime.train.model import build_model, num_parameters
    from specc.spec.model import ModelSpec

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "specs" / "tiny.yaml").read_text())["model"]
    spec = ModelSpec.model_validate(raw)
    assert num_parameters(build_model(spec, seed=0)) == params.count_parameters(spec).total
