"""The stage registry (`specc.pipeline`) and the runtime's dispatch on it (`specc.runtime.stages`):
one declaration per stage kind that the emitter, the launcher and the runtime all read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT, SPECS

from specc.diagnostics.check import check_file
from specc.emit.stages import build_stages
from specc.io import mark_success
from specc.pipeline import ALIGNMENT, STAGE_KINDS, kind_of, output_dirname
from specc.plan import build_plan
from specc.runtime.stages import module_for_config, skips_when_complete


def test_every_kind_reads_only_earlier_kinds_and_has_its_runtime_module():
    seen: set[str] = set()
    for kind in STAGE_KINDS:
        assert set(kind.reads) <= seen | {ALIGNMENT}, f"{kind.name} reads a later stage: {kind.reads}"
        assert importlib.util.find_spec(kind.module) is not None, kind.module
        assert not kind.process_per_device or kind.spans_cluster
        seen.add(kind.name)


def test_bundle_stages_follow_the_registry_order_and_flags():
    spec = check_file(SPECS / "tiny.yaml").spec
    plan = build_plan(spec).model_dump(mode="json")
    stages = build_stages(spec, plan, str(SPECS))
    order = [kind.name for kind in STAGE_KINDS]
    assert [order.index(stage.kind.name) for stage in stages] == sorted(order.index(s.kind.name) for s in stages)
    assert [s.name for s in stages if s.kind.name == ALIGNMENT] == [stage.name for stage in spec.alignment]
    for stage in stages:
        assert kind_of(stage.config_file("../runs/x")) is stage.kind
        assert ("exclusive" in stage.directives) == (stage.kind.spans_cluster and spec.cluster.slurm.exclusive)


def test_kind_of_a_config_and_its_output_directory():
    assert kind_of({"stage": "pretrain_tpu", "params": {}}).module == "specc.runtime.tpu.stage"
    assert output_dirname("pretrain_tpu") == "pretrain" and output_dirname("tokenize") == "tokenize"
    aligned = {"stage": "dpo-2", "params": {"stage": {"name": "dpo-2", "type": "dpo"}}}
    assert kind_of(aligned).name == ALIGNMENT and output_dirname("dpo-2") == "dpo-2"
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        module_for_config({"stage": "nope", "params": {}})


def test_a_stage_that_finished_with_this_config_is_skipped_once_in_one_place(tmp_path, capsys):
    calls = []
    run = skips_when_complete(calls.append)
    config = {"stage": "pretrain_tpu", "run_dir": str(tmp_path), "params": {"seed": 1}}
    run(config)
    assert calls == [config]
    mark_success(tmp_path / "pretrain", config)
    run(config)
    assert calls == [config] and "pretrain_tpu: already complete" in capsys.readouterr().out
    run({**config, "params": {"seed": 2}})  # another config: runs again
    assert len(calls) == 2


def test_the_registry_imports_no_runtime_module_and_no_torch():
    code = ("import sys, specc.pipeline, specc.runtime.stages; "
            "assert 'torch' not in sys.modules; "
            "assert not [m for m in sys.modules if m.startswith('specc.runtime.') and m != 'specc.runtime.stages']")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
