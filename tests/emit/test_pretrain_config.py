"""`build_pretrain_config`: the bundle emitter's torch-free bridge from a Spec to the pretrain stage config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specc.diagnostics.check import check_file
from specc.emit.configs.pretrain import build_pretrain_config

SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec_of(name: str):
    result = check_file(SPECS / name)
    assert result.spec is not None
    return result.spec


def test_tiny_spec_params_round_trip(tmp_path):
    from specc.runtime.train.stage import settings_from_config

    params = build_pretrain_config(spec_of("tiny.yaml"), predicted={"step_s": 0.1, "flops_per_token": 2e6, "peak_tflops": 1.0,
                                                               "peak_memory_gib": None})
    config = json.loads(json.dumps({"stage": "pretrain", "run_dir": str(tmp_path), "params": params}))
    settings = settings_from_config(config)
    assert settings.model.hidden_size == 64 and settings.model.tie_embeddings
    assert settings.parallel.dp == 1 and settings.parallel.precision == "fp32"
    assert settings.schedule.steps == 200
    assert settings.shard_dir == tmp_path / "tokenize" / "shards"
    assert params["predicted"] == {"step_s": 0.1, "flops_per_token": 2e6, "peak_tflops": 1.0}
    assert params["devices"] == 1 and params["accelerator"] == "cpu"


def test_plan_layout_is_merged_and_dp_resolved():
    spec = spec_of("llama3-8b-h100x8.yaml")
    layout = {"dp": 2, "tp": 4, "pp": 1, "cp": 1, "ep": 1, "vpp": 1, "zero_stage": 1, "micro_batch": 1,
              "grad_accum": 8, "recompute": "selective"}
    parallel = build_pretrain_config(spec, layout)["parallel"]
    assert (parallel["dp"], parallel["tp"], parallel["micro_batch"], parallel["recompute"]) == (2, 4, 1, "selective")
    assert "grad_accum" not in parallel
    auto = build_pretrain_config(spec, {"dp": "auto", "tp": 2})["parallel"]
    assert auto["dp"] == 4  # 8 devices / tp 2
    with pytest.raises(ValueError, match=r"devices \(8\) are not divisible by tp x pp x cp = 3 x 1 x 1 = 3"):
        build_pretrain_config(spec, {"dp": "auto", "tp": 3})


def test_params_module_does_not_import_torch():
    code = "import sys, specc.emit.configs.pretrain; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SPECS.parent)
