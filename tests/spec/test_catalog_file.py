"""`cluster.catalog`: a user's accelerators in the built-in catalog's schema, usable by validate, plan,
search, calibrate and the runtime's capability checks; mistakes located inside the catalog file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specc.catalog import builtin_catalog, entry_of, load_catalog
from specc.diagnostics.check import check_file
from specc.emit.configs.pretrain import build_pretrain_config
from specc.plan import build_plan, plan_json
from specc.plan.calibrate import runs_from_table
from specc.spec.catalog_file import CatalogEntry

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """\
devices:
  - id: h100-96gb-500w
    name: H100 96GB HBM2e (500 W)
    kind: gpu
    peak_tflops: {bf16: 912, fp16: 912, fp8: 1824}
    memory_gb: 96
    memory_bw_tbps: 2.4
    devices_per_node: 8
    intra_node_gbps: 450
    inter_node_gbps: 50
    fp8: true
    sources: ["torchtitan benchmark notes: Grand Teton H100, 96 GB HBM2e, 500 W"]
"""

SPEC = """\
name: custom
model: {num_layers: 4, hidden_size: 512, num_heads: 8, ffn_hidden_size: 1024, vocab_size: 4096, max_seq_len: 1024}
schedule: {lr: 3e-4, seq_len: 1024, global_batch_size: 16, steps: 100, checkpoint_interval: 50}
tokenizer: {vocab_size: 4096}
parallel: {fsdp: true, precision: fp8}
cluster: {accelerator: h100-96gb-500w, catalog: gpus/my-gpus.yaml, devices: 8}
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    (tmp_path / "gpus").mkdir()
    (tmp_path / "gpus" / "my-gpus.yaml").write_text(CATALOG)
    (tmp_path / "spec.yaml").write_text(SPEC)
    return tmp_path / "spec.yaml"


@pytest.mark.parametrize("accelerator_id", list(builtin_catalog()))
def test_every_builtin_entry_has_the_user_files_schema(accelerator_id):
    raw = json.loads((ROOT / "specc" / "catalog" / "accelerators.json").read_text())
    entry = next(e for e in raw["devices"] if e["id"] == accelerator_id)
    written = CatalogEntry.model_validate(entry).catalog_dict()
    assert {k: written[k] for k in entry} == entry


def test_plan_and_search_use_the_users_accelerator(spec_path):
    result = check_file(spec_path)
    assert result.valid, [d.to_text() for d in result.diagnostics]
    plan = json.loads(plan_json(build_plan(result.spec)))
    assert plan["hardware"]["accelerator"] == "h100-96gb-500w"
    assert plan["memory"]["capacity_gib"] == pytest.approx(96e9 / 2**30, abs=1e-3)
    searched = json.loads(plan_json(build_plan(result.spec, force_search=True)))
    assert searched["memory"]["capacity_gib"] == plan["memory"]["capacity_gib"]
    config = build_pretrain_config(result.spec)
    assert config["accelerator_entry"] == entry_of(load_catalog()["h100-96gb-500w"])


def test_calibrate_plans_table_rows_on_the_users_accelerator(spec_path):
    table = spec_path.parent / "runs.csv"
    table.write_text("spec,measured_step_s\nspec.yaml,2.5\n")
    (run,) = runs_from_table(table)
    assert run.accelerator == "h100-96gb-500w"


def test_the_next_spec_sees_the_builtin_catalog_only(spec_path):
    check_file(spec_path)
    check_file(ROOT / "specs" / "tiny.yaml")
    assert "h100-96gb-500w" not in load_catalog() and load_catalog() is builtin_catalog()


def test_validate_and_plan_never_import_torch(spec_path):
    code = ("import sys; from specc.diagnostics.check import check_file; from specc.plan import build_plan; "
            f"r = check_file({str(spec_path)!r}); build_plan(r.spec, force_search=True); "
            "assert r.valid and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
