"""`specc plan --verify`: TPU plans checked against libtpu's ahead-of-time compile of the step.

CI has the TPU environment (`.venv-tpu`) but no libtpu: the export step is tested for real there;
the full verify runs only where SPECC_JAX_PYTHON names a python with `jax[tpu]==0.10.2`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from specc.cli import main
from specc.diagnostics.check import check_file
from specc.plan import build_plan, plan_json
from specc.plan.tpu_compile import unpack_i1_constants
from specc.plan.verify_tpu import VerifyError, case_for, compare, export_step, topology, tpu_python

ROOT = Path(__file__).resolve().parent.parent.parent
TINY_TPU = """\
name: tpu-verify-tiny
tokenizer: {vocab_size: 2048}
model: {num_layers: 2, hidden_size: 64, num_heads: 4, num_kv_heads: 2, ffn_hidden_size: 176, activation: swiglu,
        norm: rmsnorm, position: rope, vocab_size: 2048, max_seq_len: 256, tie_embeddings: true}
parallel: {dp: 2, fsdp: true, tp: 2, micro_batch: 4, precision: bf16}
schedule: {lr: 3e-3, seq_len: 128, global_batch_size: 8, steps: 10}
cluster: {accelerator: tpu-v5e, devices: 4, devices_per_node: 4}
"""


@pytest.fixture
def tiny_tpu(tmp_path: Path) -> Path:
    path = tmp_path / "tpu.yaml"
    path.write_text(TINY_TPU)
    return path


def _plan(path: Path, overrides: list[str] | None = None):
    result = check_file(path, overrides or [])
    assert result.valid, [d.to_text() for d in result.diagnostics]
    return result.spec, json.loads(plan_json(build_plan(result.spec)))


@pytest.mark.parametrize(("accelerator", "torus", "devices", "expected"), [
    ("tpu-v5e", "2d", 4, "v5e:2x2"), ("tpu-v5e", "2d", 8, "v5e:2x4"), ("tpu-v5e", "2d", 16, "v5e:4x4"),
    ("tpu-v5e", "2d", 256, "v5e:16x16"), ("tpu-v6e", "2d", 32, "v6e:4x8"),
    ("tpu-v5p", "3d", 4, "v5p:2x2x1"), ("tpu-v5p", "3d", 8, "v5p:2x2x2"), ("tpu-v5p", "3d", 16, "v5p:2x2x4"),
    ("tpu-v5p", "3d", 32, "v5p:2x4x4"), ("tpu-v5p", "3d", 64, "v5p:4x4x4"), ("tpu-v4", "3d", 128, "v4:4x4x8"),
])
def test_topology_strings_follow_cloud_tpu_slice_shapes(accelerator, torus, devices, expected):
    assert topology(accelerator, torus, devices) == expected


@pytest.mark.parametrize("devices", [1, 2, 6, 12])
def test_topology_refuses_what_is_not_one_slice(devices):
    with pytest.raises(VerifyError, match="power of two"):
        topology("tpu-v5e", "2d", devices)


def test_topology_refuses_multi_slice():
    with pytest.raises(VerifyError, match="multi-slice"):
        topology("tpu-v5e", "2d", 512, max_slice_chips=256)


def test_case_is_the_plans_own_layout(tiny_tpu):
    spec, plan = _plan(tiny_tpu)
    case = case_for(spec, plan)
    assert (case.devices, case.topology, case.seq_len) == (4, "v5e:2x2", 128)
    assert (case.parallel["dp"], case.parallel["tp"], case.parallel["fsdp"], case.parallel["micro_batch"]) == (2, 2, True, 4)
    assert case.model["hidden_size"] == 64 and case.model["num_kv_heads"] == 2


def test_case_of_a_v5p_spec_names_its_3d_slice():
    spec, plan = _plan(ROOT / "specs" / "llama2-7b-tpu-v5p.yaml")
    case = case_for(spec, plan)
    assert (case.devices, case.topology, case.parallel["recompute"]) == (128, "v5p:4x4x8", "full")


def test_gpu_spec_is_refused(tmp_path, capsys):
    path = tmp_path / "gpu.yaml"
    path.write_text(TINY_TPU.replace("accelerator: tpu-v5e, devices: 4, devices_per_node: 4",
                                     "accelerator: h100-sxm, devices: 4, devices_per_node: 4"))
    assert main(["plan", str(path), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "TPU-only" in err and "h100-sxm" in err and "Traceback" not in err


def test_missing_libtpu_says_what_to_install(tiny_tpu, capsys, monkeypatch):
    monkeypatch.setenv("SPECC_TPU_PYTHON", sys.executable)  # reach the JAX check whatever this host has
    monkeypatch.delenv("SPECC_JAX_PYTHON", raising=False)
    assert main(["plan", str(tiny_tpu), "--verify", "--jax-python", sys.executable]) == 1
    captured = capsys.readouterr()
    assert 'pip install "jax[tpu]==0.10.2"' in captured.err and "--jax-python" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_missing_tpu_environment_says_how_to_create_it(tiny_tpu, capsys, monkeypatch):
    monkeypatch.setenv("SPECC_TPU_PYTHON", str(tiny_tpu.parent / "no-such-venv" / "bin" / "python"))
    assert main(["plan", str(tiny_tpu), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "scripts/setup-tpu-venv.sh" in err and "Traceback" not in err


def test_jax_python_without_verify_is_a_usage_error(tiny_tpu, capsys):
    assert main(["plan", str(tiny_tpu), "--jax-python", sys.executable]) == 1
    assert "only with --verify" in capsys.readouterr().err


def test_a_model_too_large_to_trace_here_is_refused_not_scaled_down(tmp_path, capsys):
    path = tmp_path / "huge.yaml"  # ~100T parameters: 1.5 PB to trace, more than any host has
    path.write_text(TINY_TPU.replace("num_layers: 2, hidden_size: 64", "num_layers: 2000, hidden_size: 65536")
                    .replace("ffn_hidden_size: 176", "ffn_hidden_size: 180224"))
    assert main(["plan", str(path), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "GiB of memory" in err and "scaled-down" in err and "Traceback" not in err


def test_compare_warns_p250_beyond_ten_percent():
    gib = 2**30
    close = compare(1.5, {"argument_bytes": gib // 2, "temp_bytes": gib // 2, "output_bytes": 4, "alias_bytes": 0}, "v5e:2x2")
    assert close["difference_pct"] == 0.0 and "finding" not in close  # 1.5 planned - 0.5 reserve = 1.0 compiled
    far = compare(2.0, {"argument_bytes": gib // 2, "temp_bytes": gib // 2, "output_bytes": 4, "alias_bytes": 0}, "v5e:2x2")
    assert far["difference_pct"] == 50.0 and far["finding"]["code"] == "P250"
    refused = compare(2.0, {"refused": "HLO temporaries (19.15G) exceeds available HBM (15.75G)"}, "v5e:2x2")
    assert refused["compiled_gib"] is None and refused["finding"]["code"] == "P250"


def test_bit_packed_boolean_constants_are_unpacked_one_byte_per_element():
    text = 'stablehlo.constant dense<"0x0F"> : tensor<8xi1>\nstablehlo.constant dense<"0x01"> : tensor<1xi1>'
    assert unpack_i1_constants(text) == ('stablehlo.constant dense<"0x0101010100000000"> : tensor<8xi1>\n'
                                         'stablehlo.constant dense<"0x01"> : tensor<1xi1>')
    packed = 'dense<"0x0301"> : tensor<2x5xi1>'  # 10 elements in two bytes, LSB first
    assert unpack_i1_constants(packed) == 'dense<"0x01010000000000000100"> : tensor<2x5xi1>'


def _require_tpu_env() -> None:
    try:
        tpu_python()
    except VerifyError as error:
        pytest.skip(str(error))


@pytest.mark.slow  # torch-xla traces the step: ~15 s on two cores
def test_export_writes_stablehlo_for_every_chip(tiny_tpu, tmp_path):
    _require_tpu_env()
    spec, plan = _plan(tiny_tpu)
    case = case_for(spec, plan)
    export_step(case, tmp_path, tpu_python())
    meta = json.loads((tmp_path / "outputs.json").read_text())
    module = (tmp_path / "step.mlir").read_text()
    assert meta["num_devices"] == 4 and module.startswith("module @")
    tiled = re.findall(r"devices=\[([0-9,]+)\]([0-9,]+)", module + " ".join(meta["shardings"]))
    assert tiled, "no sharded tensor in the exported step"
    for dims, ids in tiled:  # every sharding spans the four partitions of the 2 x 2 mesh
        assert math.prod(map(int, dims.split(","))) == 4 and sorted(map(int, ids.split(","))) == [0, 1, 2, 3]


@pytest.mark.slow  # export and libtpu compile: ~30 s; only where a JAX/libtpu python is named
def test_full_verify_adds_the_verify_object(tiny_tpu, tmp_path):
    _require_tpu_env()
    jax_python = os.environ.get("SPECC_JAX_PYTHON")
    if not jax_python:
        pytest.skip("SPECC_JAX_PYTHON (a python with jax[tpu]==0.10.2) is not set")
    result = subprocess.run([sys.executable, "-m", "specc.cli", "plan", str(tiny_tpu), "--verify", "--json"],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    verify = json.loads(result.stdout)["verify"]
    assert verify["topology"] == "v5e:2x2" and verify["compiled_gib"] > 0 and verify["argument_gib"] > 0
