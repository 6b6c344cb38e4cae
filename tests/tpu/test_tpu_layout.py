"""The spec's parallel section -> the SPMD mesh and partition specs (pure Python, main environment)."""

from __future__ import annotations

import pytest

from specc.runtime.tpu.layout import COLUMN, ROW, MeshShape, batch_spec, logits_spec, mesh_shape, parameter_spec
from specc.runtime.train.model import build_model
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec


def test_tpu_mesh_from_fsdp_and_tp():
    assert mesh_shape(ParallelSpec(dp=2, fsdp=True, tp=2), 4) == MeshShape(data=1, fsdp=2, tensor=2)
    assert mesh_shape(ParallelSpec(fsdp=True), 128) == MeshShape(data=1, fsdp=128, tensor=1)
    assert mesh_shape(ParallelSpec(fsdp=True, hsdp_replicas=2, tp=4), 64) == MeshShape(data=2, fsdp=8, tensor=4)
    assert mesh_shape(ParallelSpec(zero_stage=1), 8).fsdp == 8  # GSPMD shards fully for any ZeRO stage


def test_tpu_mesh_without_sharding_is_pure_data_parallel():
    shape = mesh_shape(ParallelSpec(dp="auto", tp=2), 8)
    assert shape == MeshShape(data=4, fsdp=1, tensor=2)
    assert shape.batch_shards == 4 and shape.num_devices == 8


def test_tpu_mesh_errors_spell_out_the_arithmetic():
    with pytest.raises(ValueError, match=r"dp x tp x pp x cp = 2 x 2 x 1 x 1 = 4, but the cluster has 8 devices \(set dp: 4"):
        mesh_shape(ParallelSpec(dp=2, tp=2), 8)
    with pytest.raises(ValueError, match=r"devices \(8\) are not divisible by tp x pp x cp = 3 x 1 x 1 = 3"):
        mesh_shape(ParallelSpec(tp=3), 8)
    with pytest.raises(ValueError, match=r"pp=2 is not supported"):
        mesh_shape(ParallelSpec(pp=2), 8)
    with pytest.raises(ValueError, match=r"dp \(8\) is not divisible by hsdp_replicas \(3\)"):
        mesh_shape(ParallelSpec(fsdp=True, hsdp_replicas=3), 8)


def test_tpu_every_parameter_of_the_shared_model_gets_a_spec_of_its_rank():
    spec = ModelSpec(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, ffn_hidden_size=64, vocab_size=64,
                     max_seq_len=16, position="learned", qkv_bias=True, norm="layernorm")
    model = build_model(spec, seed=0)
    specs = {name: parameter_spec(name, param.dim()) for name, param in model.named_parameters()}
    for name, param in model.named_parameters():
        assert len(specs[name]) == param.dim(), name
    assert specs["layers.0.attention.wq.weight"] == COLUMN
    assert specs["layers.0.attention.wq.bias"] == ("tensor",)
    assert specs["layers.0.attention.wo.weight"] == ROW
    assert specs["layers.1.feed_forward.w1.weight"] == COLUMN
    assert specs["layers.1.feed_forward.w2.weight"] == ROW
    assert specs["embeddings.tok_embeddings.weight"] == specs["output.weight"] == COLUMN
    assert specs["embeddings.pos_embeddings.weight"] == (None, "fsdp")
    assert specs["layers.0.attention_norm.weight"] == specs["layers.0.attention_norm.bias"] == (None,)


def test_tpu_moe_experts_keep_the_expert_dimension_whole():
    assert parameter_spec("layers.0.feed_forward.experts.w1", 3) == (None, "fsdp", "tensor")
    assert parameter_spec("layers.0.feed_forward.experts.w2", 3) == (None, "tensor", "fsdp")
    assert parameter_spec("layers.0.feed_forward.router.weight", 2) == (None, "fsdp")


def test_tpu_activation_specs_split_the_batch_over_data_and_fsdp():
    assert batch_spec(2) == (("data", "fsdp"), None)
    assert batch_spec(3) == (("data", "fsdp"), None, None)
    assert logits_spec() == (("data", "fsdp"), None, "tensor")
