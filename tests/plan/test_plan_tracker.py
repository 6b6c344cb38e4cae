"""A few planner-vs-FSDPMemTracker comparisons on specc's own runtime model (fake tensors, fake
process group, in a subprocess so the fake group stays out of this test process). The full set
of 37 configs is benchmarks/plan_vs_tracker.py (one TP + SP and one MoE config here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def rows():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_vs_tracker.py"), "--json",
                             "--only", "base", "--only", "base-selective", "--only", "layernorm-learned",
                             "--only", "tp2-sp-selective", "--only", "moe"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return {row["config"]: row for row in json.loads(result.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize("config", ["base", "base-selective", "layernorm-learned", "tp2-sp-selective", "moe"])
def test_planner_matches_tracker(rows, config):
    row = rows[config]
    planned, measured = row["states"]
    assert planned == pytest.approx(measured, rel=0.01)          # weights + optimizer state, exact
    planned, measured = row["activations"]
    assert planned == pytest.approx(measured, rel=0.05)          # activations per layer
    planned, measured = row["peak"]
    assert planned == pytest.approx(measured, rel=0.05)          # whole-step peak (the largest of loss, backward, optimizer)
