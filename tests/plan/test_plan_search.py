"""Layout search: proposes only valid, fitting layouts, ranked by time; `parallel: auto` plans."""

from __future__ import annotations

import pytest

from conftest import ROOT
from specc.diagnostics.check import check_file
from specc.plan import build_plan
from specc.plan.plan import _passes_rules

SPECS = ROOT / "specs"


def _plan(name, *overrides, search=True, top=5):
    result = check_file(SPECS / name, list(overrides))
    assert result.valid, [d.to_text() for d in result.diagnostics]
    return result.spec, build_plan(result.spec, force_search=search, top=top).model_dump()


def test_parallel_auto_searches():
    spec, plan = _plan("llama3-70b-h100x64.yaml", "parallel=auto", search=False)
    assert plan["searched"] and plan["search"]["fitting"] > 0
    assert plan["memory"]["fits"]
    layout = plan["layout"]
    assert layout["dp"] * layout["tp"] * layout["pp"] * layout["cp"] == 64


@pytest.mark.parametrize("name", ["llama3-405b-h100x16k.yaml", "mixtral-8x7b-h100x128.yaml", "llama2-7b-tpu-v5p.yaml"])
def test_candidates_fit_pass_rules_and_are_ranked(name):
    from specc.plan.layout import Layout

    spec, plan = _plan(name, top=4)
    steps = [c["time"]["step_s"] for c in plan["candidates"]]
    assert steps == sorted(steps) and len(steps) <= 4
    for candidate in plan["candidates"]:
        assert candidate["memory"]["fits"]
        fields = {k: v for k, v in candidate["layout"].items() if k in Layout.__dataclass_fields__}
        fields["zero_stage"] = 0 if fields["fsdp"] else fields["zero_stage"]
        assert _passes_rules(spec, Layout(**fields))


def test_search_reports_rejections_and_beats_or_matches_spec():
    spec, searched = _plan("llama3-70b-h100x64.yaml")
    _, fixed = _plan("llama3-70b-h100x64.yaml", search=False)
    assert searched["search"]["rejected"].get("does not fit in memory", 0) > 0
    assert searched["time"]["step_s"] <= fixed["time"]["step_s"]
    assert any(w["code"] == "P207" for w in searched["warnings"])


def test_nothing_fits_is_a_warning_not_a_crash():
    _, plan = _plan("llama3-70b-h100x64.yaml", "parallel=auto", "cluster.nodes=1", search=False)
    assert not plan["memory"]["fits"]
    assert {w["code"] for w in plan["warnings"]} >= {"P206", "P201"}


def test_moe_search_uses_expert_parallelism():
    _, plan = _plan("mixtral-8x7b-h100x128.yaml", top=10)
    assert any(c["layout"]["ep"] > 1 for c in plan["candidates"])


def test_search_tries_partial_recompute_before_full():
    """Where no layout fits without recomputation and the runtime has no selective mode (TPU),
    recomputing one block in 4 (`recompute_every: 4`) fits before every block must be: the search
    proposes it, it passes validate's rules, and it is faster than full recompute of the same layout."""
    from dataclasses import replace

    from specc.plan.estimate import estimate_layout
    from specc.plan.layout import Layout
    from specc.plan.plan import _workload

    spec, plan = _plan("llama2-7b-tpu-v5p.yaml", "model.num_layers=128", top=10)
    partial = [c for c in plan["candidates"] if c["layout"].get("recompute_every", 1) > 1]
    assert partial, [c["layout"]["recompute"] for c in plan["candidates"]]
    fields = {k: v for k, v in partial[0]["layout"].items() if k in Layout.__dataclass_fields__}
    fields["zero_stage"] = 0 if fields["fsdp"] else fields["zero_stage"]
    layout = Layout(**fields)
    assert layout.recompute == "full" and _passes_rules(spec, layout)
    work = _workload(spec)
    hardware = work.hardware(layout.precision)
    every_block = estimate_layout(work, replace(layout, recompute_every=1), hardware)
    assert partial[0]["time"]["step_s"] < every_block.time.step_s
