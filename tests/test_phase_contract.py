"""The phases agree: for random valid specs, what the plan proposes is what the runtime builds.

For each generated spec (tiny sizes, random architecture, device count and accelerator):
(a) every layout the search proposes is accepted by the target runtime's own construction: the
    torch runtime's degree resolution, start-up layout checks, device mesh (under a fake process
    group of the full world size) and pipeline split; the TPU runtime's SPMD mesh shape;
(b) the runtime model's parameter count equals the plan's;
(c) the pretrain stage's config built from the plan carries exactly the plan's degrees,
    sequence length and precision;
(d) each alignment stage's config carries the plan's alignment devices and precision, the emitted
    stage spans exactly those devices, and the alignment runtime's data-parallel mesh builds for them.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.testing._internal.distributed.fake_pg import FakeStore

from conftest import SPECS
from specc.diagnostics.check import check_file
from specc.plan import build_plan
from specc.runtime.tpu.layout import mesh_shape
from specc.runtime.train import parallelize as par
from specc.runtime.train.model import Transformer, num_parameters
from specc.emit.configs.pretrain import build_pretrain_config
from specc.spec import parallel_dims
from specc.spec.parallel import ParallelSpec

ACCELERATORS = ("cpu", "h100-sxm", "a100-80gb", "v100-32gb", "tpu-v5p")


@st.composite
def spec_overrides(draw) -> list[str]:
    """`--set` overrides of specs/tiny.yaml: a random small decoder and cluster, `parallel: auto`."""
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    kv = draw(st.sampled_from([d for d in (1, 2, 4, 8) if heads % d == 0]))
    accelerator = draw(st.sampled_from(ACCELERATORS))
    devices = draw(st.sampled_from([1, 2, 4, 8]))
    overrides = [
        f"model.num_layers={draw(st.integers(1, 8))}",
        f"model.num_heads={heads}", f"model.num_kv_heads={kv}", f"model.hidden_size={8 * heads}",
        f"model.ffn_hidden_size={draw(st.sampled_from([16, 24, 32, 48, 64]))}",
        f"model.tie_embeddings={str(draw(st.booleans())).lower()}",
        f"model.position={draw(st.sampled_from(['rope', 'alibi', 'learned', 'sinusoidal']))}",
        f"schedule.seq_len={draw(st.sampled_from([32, 64, 128]))}",
        f"schedule.global_batch_size={devices * draw(st.sampled_from([1, 2, 4]))}",
        "parallel=auto", f"cluster.accelerator={accelerator}", f"cluster.devices={devices}",
        "+cluster.devices_per_node=" + str(devices),
    ]
    if draw(st.booleans()):
        overrides += ["+model.moe.num_experts=4", f"+model.moe.top_k={draw(st.sampled_from([1, 2]))}",
                      f"+model.moe.layer_frequency={draw(st.sampled_from([1, 2]))}"]
    return overrides


def _runtime_accepts_torch(spec, parallel: ParallelSpec, devices: int) -> None:
    """The torch runtime's start-up: degrees, layout checks, the mesh and every pp rank's chunks."""
    dims = parallel_dims.resolve(parallel, devices)
    par.check_model_fits_layout(spec.model, parallel, dims, spec.schedule.seq_len, spec.cluster.accelerator)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=devices)
    try:
        meshes = par.build_mesh(dims, "cpu")
        assert meshes["world"].size() == devices
    finally:
        dist.destroy_process_group()
    if dims.pp > 1:
        with torch.device("meta"):
            model = Transformer(spec.model)
        for pp_rank in range(dims.pp):
            chunks = par.split_pipeline(model, parallel, pp_rank)
            assert all(len(chunk.layers) > 0 for _, chunk in chunks)


@pytest.mark.slow  # builds torch models for 30 examples, ~6.6 s
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(overrides=spec_overrides())
def test_plan_and_runtime_agree(overrides):
    result = check_file(SPECS / "tiny.yaml", overrides)
    assume(result.valid)
    spec = result.spec
    plan = build_plan(spec, force_search=True, top=4).model_dump()
    devices = plan["hardware"]["count"]
    with torch.device("meta"):
        runtime_params = num_parameters(Transformer(spec.model))
    assert runtime_params == plan["model"]["params"]  # (b)
    for candidate in plan["candidates"]:
        config = build_pretrain_config(spec, candidate["layout"])
        parallel = ParallelSpec.model_validate(config["parallel"])
        if plan["hardware"]["kind"] == "tpu":
            shape = mesh_shape(parallel, devices)  # (a) TPU
            assert shape.num_devices == devices
        else:
            _runtime_accepts_torch(spec, parallel, devices)  # (a) torch
        layout = candidate["layout"]
        for axis in ("dp", "tp", "pp", "cp", "ep", "vpp", "micro_batch"):  # (c)
            assert getattr(parallel, axis) == layout[axis], axis
        assert parallel.recompute == layout["recompute"]
        assert parallel.precision == layout["precision"] == plan["hardware"]["precision"]
        assert config["schedule"]["seq_len"] == spec.schedule.seq_len
        stage = 3 if parallel.fsdp else parallel.zero_stage
        assert stage == layout["zero_stage"]
    if plan["hardware"]["kind"] != "tpu":
        _alignment_agrees(spec, plan)


def _alignment_agrees(spec, plan: dict) -> None:
    """(d): configs, emitted processes and the runtime's mesh for every alignment stage."""
    from specc.emit.stages import build_stages

    entries = {entry["stage"]: entry for entry in plan["alignment"]}
    for stage in build_stages(spec, plan, str(SPECS)):
        if stage.name not in entries or entries[stage.name]["type"] == "constitutional":
            continue
        entry = entries[stage.name]
        assert stage.config["precision"] == entry["precision"] and stage.config["devices"] == entry["devices"]
        assert stage.nodes * stage.procs_per_node == entry["devices"]
        assert all(model["devices"] == entry["devices"] for model in entry["models"])
    devices = plan["hardware"]["count"]
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=devices)
    try:
        assert par.build_mesh(parallel_dims.resolve(ParallelSpec(), devices), "cpu")["dp"].size() == devices
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("accelerator", ["tpu-v5p", "tpu-v4"])
def test_tpu_search_proposes_only_what_the_tpu_runtime_runs(accelerator):
    """Was: pp 2/4 layouts, a ZeRO-1 layout (run as full sharding) and selective recompute (run as
    full) ranked for the TPU spec."""
    spec = check_file(SPECS / "llama2-7b-tpu-v5p.yaml", [f"cluster.accelerator={accelerator}"]).spec
    plan = build_plan(spec, force_search=True, top=20).model_dump()
    assert plan["candidates"]
    for candidate in plan["candidates"]:
        layout = candidate["layout"]
        assert (layout["pp"], layout["cp"], layout["ep"], layout["sp"]) == (1, 1, 1, False), layout
        assert layout["zero_stage"] in (0, 3)
        assert layout["recompute"] in ("none", "full"), layout
        mesh_shape(ParallelSpec.model_validate(build_pretrain_config(spec, layout)["parallel"]), plan["hardware"]["count"])
