"""benchmarks/data/fresh_runs.json, the published runs collected after the planner's model was frozen
(issue 16 item 4): every row is sourced, carries a measured throughput, and plans with the model as
shipped, or says why the spec cannot express it. Not an accuracy test: the figures are the benchmark's
(`python benchmarks/plan_vs_published.py --fresh`)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data"


def _benchmark():
    """The benchmark module (benchmarks/ is no package), registered in sys.modules as its dataclasses need."""
    if "plan_vs_published" not in sys.modules:
        spec = importlib.util.spec_from_file_location("plan_vs_published", ROOT / "benchmarks" / "plan_vs_published.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["plan_vs_published"] = module
        spec.loader.exec_module(module)
    return sys.modules["plan_vs_published"]


def _rows(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text())


def test_every_fresh_row_is_sourced_and_measured():
    for row in _rows("fresh_runs.json"):
        source = row["source"]
        assert source["url"].startswith("https://"), row["id"]
        assert source["title"] and source["table"], row["id"]
        measured = row["measured"]
        assert (measured.get("tokens_per_sec_per_gpu") or 0) > 0 or (measured.get("step_time_s") or 0) > 0, row["id"]
        assert row["layout"]["global_batch"] > 0 and row["group"], row["id"]
        assert row["uncertain"], f"{row['id']}: say what was assumed"


def test_fresh_rows_are_new():
    """No fresh row repeats a calibration or held-out row (id, or the same model, hardware, device count,
    batch and published figure)."""
    fresh = _rows("fresh_runs.json")
    seen = _rows("published_runs.json") + _rows("held_out_runs.json")
    ids = [row["id"] for row in fresh]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {row["id"] for row in seen}

    def key(row):
        return (row["model"]["name"], row["hardware"]["type"], row["hardware"]["count"], row["layout"]["global_batch"],
                row["measured"].get("tokens_per_sec_per_gpu"))

    assert not {key(row) for row in fresh} & {key(row) for row in seen}


def test_every_comparable_fresh_row_plans():
    """Rows the spec can express (its layout rules pass, `spec_layout_problems`) plan without error to a
    positive throughput; the others say why."""
    benchmark = _benchmark()
    rows = benchmark.load_fresh()
    results, skipped = benchmark.fresh_results(rows)
    declared = {row["id"] for row in rows if row.get("not_comparable")}
    assert {row_id for row_id, _ in skipped} == declared, [s for s in skipped if s[0] not in declared]
    assert all(reason for _, reason in skipped)
    assert len(results) == len(rows) - len(declared) >= 12
    for result in results:
        assert math.isfinite(result["predicted"]) and result["predicted"] > 0, result["id"]
        assert result["measured"] > 0, result["id"]
