"""The failure budget (`specc.plan.reliability`, docs/formulas.md section 8): Young/Daly intervals,
Daly's expected wall time, and the P210-P212 findings on real specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from specc.diagnostics.check import check_file
from specc.plan import build_plan, plan_json
from specc.plan.reliability import daly_interval, expected_wall_s, young_interval
from specc.spec.reliability import LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY

ROOT = Path(__file__).resolve().parents[2]
LLAMA_405B = ROOT / "specs" / "llama3-405b-h100x16k.yaml"


def _plan(path: Path, overrides: list[str] = ()) -> dict:
    result = check_file(path, list(overrides))
    assert result.valid, "\n".join(d.to_text() for d in result.diagnostics)
    return json.loads(plan_json(build_plan(result.spec, overrides=list(overrides))))


def _codes(plan: dict) -> set[str]:
    return {finding["code"] for finding in plan["warnings"]}


def test_llama3_default_rate_is_one_interruption_every_three_hours_at_16k():
    """419 unexpected interruptions in 54 days on 16,384 GPUs (Llama 3, sec. 3.3.4)."""
    assert LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY == pytest.approx(4.7359e-4, rel=1e-4)
    budget = _plan(LLAMA_405B)["reliability"]
    assert budget["devices"] == 16384
    assert budget["mtbf_h"] == pytest.approx(54 * 24 / 419, rel=1e-4)
    # 405B parameters x 12 B (fp32 weights + Adam m, v) at 2,048 nodes x 1 GB/s
    assert budget["checkpoint_write_s"] == pytest.approx(405.8e9 * 12 / 2.048e12, rel=0.01)


def test_daly_reduces_to_young_when_checkpoints_are_cheap_and_caps_at_the_mtbf():
    assert daly_interval(1.0, 1e6) == pytest.approx(young_interval(1.0, 1e6), rel=1e-3)
    assert daly_interval(300.0, 3600.0) < young_interval(300.0, 3600.0)
    assert daly_interval(10_000.0, 3600.0) == 3600.0
    assert math.isinf(daly_interval(5.0, math.inf))


def test_daly_interval_minimises_the_expected_wall_time():
    write, restart, mtbf = 60.0, 900.0, 4 * 3600.0
    best = daly_interval(write, mtbf)
    walls = {factor: expected_wall_s(1e6, best * factor, write, restart, mtbf) for factor in (0.5, 0.8, 1, 1.25, 2)}
    assert walls[1] == min(walls.values())
    assert walls[1] < walls[0.8] < walls[0.5] and walls[1] < walls[1.25] < walls[2]


def test_without_failures_only_the_checkpoint_writes_cost_time():
    assert expected_wall_s(1000.0, 100.0, 5.0, 600.0, math.inf) == pytest.approx(1050.0)


def test_interval_far_from_the_optimum_is_p210_and_the_advised_one_is_not():
    plan = _plan(LLAMA_405B)
    budget = plan["reliability"]
    assert "P210" in _codes(plan)
    assert budget["goodput"] < budget["goodput_at_optimum"]
    advised = budget["optimal_interval_steps"]
    replanned = _plan(LLAMA_405B, [f"schedule.checkpoint_interval={advised}"])
    assert "P210" not in _codes(replanned)
    assert replanned["reliability"]["goodput"] == pytest.approx(budget["goodput_at_optimum"], abs=2e-4)


def test_max_requeues_that_cannot_cover_the_run_is_p211():
    plan = _plan(LLAMA_405B)
    finding = next(f for f in plan["warnings"] if f["code"] == "P211")
    assert finding["path"] == "cluster.slurm.max_requeues" and "max_requeues (100)" in finding["message"]
    budget = plan["reliability"]
    assert budget["expected_restarts"] == pytest.approx(budget["time_limit_restarts"] + budget["expected_interruptions"],
                                                        rel=1e-5)
    wanted = int(finding["message"].split("set max_requeues >= ")[1].split()[0])
    assert wanted > budget["expected_restarts"]
    assert "P211" not in _codes(_plan(LLAMA_405B, [f"cluster.slurm.max_requeues={wanted}"]))


def test_slow_restarts_are_p212_and_the_rate_is_overridable():
    slow = _plan(LLAMA_405B, ["+cluster.reliability.requeue_delay=1h"])
    assert "P212" in _codes(slow) and slow["reliability"]["goodput_at_optimum"] < 0.8
    reliable = _plan(LLAMA_405B, ["+cluster.reliability.interruptions_per_device_day=0"])
    budget = reliable["reliability"]
    assert budget["mtbf_h"] is None and budget["expected_interruptions"] == 0
    assert not {"P210", "P212"} & _codes(reliable)
    # what is left: the checkpoint writes and the requeues at the 4 h time limit
    solve = reliable["time"]["train_days"] * 86400
    write, requeue = budget["checkpoint_write_s"], budget["requeue_s"]
    base = solve * (1 + write / budget["interval_s"])
    usable = 4 * 3600 - 90
    assert budget["time_limit_restarts"] == math.ceil(base / usable) - 1
    wall = base + budget["time_limit_restarts"] * (2 * write + requeue)
    assert budget["goodput"] == pytest.approx(solve / wall, abs=1e-4)


def test_storage_bandwidth_sets_the_checkpoint_time():
    capped = _plan(LLAMA_405B, ["+cluster.reliability.storage_gbps=100"])["reliability"]
    assert capped["storage_gbps"] == 100
    assert capped["checkpoint_write_s"] == pytest.approx(_plan(LLAMA_405B)["reliability"]["checkpoint_write_s"] * 20.48,
                                                         rel=1e-4)
    assert capped["optimal_interval_s"] > 4 * 228


def test_tiny_local_run_has_a_budget_but_no_findings():
    plan = _plan(ROOT / "specs" / "tiny.yaml")
    assert plan["reliability"]["max_requeues"] is None and plan["reliability"]["time_limit_restarts"] == 0
    assert not {"P210", "P211", "P212"} & _codes(plan)
