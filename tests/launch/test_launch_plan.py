"""Launch honours the plan: it shows the plan, refuses one with an error-level finding unless
--allow-unfit (writing and submitting nothing), and states every setting a stage runs
differently from what the plan charged.

No memory figure is hard-coded: the unfit specs are unfit by orders of magnitude (a 145B model
on one CPU, Llama-3-8B replicated without recompute on 80 GB devices), the fitting ones are the
example specs as written."""

from __future__ import annotations

import copy
import json

from launch_helpers import SPECS, TINY, specc, tiny_copy

from specc.diagnostics.check import check_file
from specc.emit.stages import build_stages
from specc.launch.planned import Difference, differences, emitted_stage_runs, refusal
from specc.plan import build_plan, plan_json
from specc.plan.findings import FINDINGS, error_findings

HUGE = ["model.hidden_size=16384", "model.ffn_hidden_size=45056", "model.num_layers=48"]
"""tiny.yaml with a ~145B-parameter model: nothing about it fits one CPU's memory."""
LLAMA8B = SPECS / "llama3-8b-h100x8.yaml"
REPLICATED = ["parallel.fsdp=false", "parallel.recompute=none"]
"""Llama-3-8B with every model state replicated and every activation kept: far over 80 GB."""


def _sets(overrides: list[str]) -> list[str]:
    return [word for override in overrides for word in ("--set", override)]


def _planned(spec_path, overrides=()):
    result = check_file(spec_path, list(overrides))
    assert result.valid, [d.to_text() for d in result.errors]
    plan = json.loads(plan_json(build_plan(result.spec, overrides=list(overrides))))
    return result, plan, emitted_stage_runs(build_stages(result.spec, plan, str(spec_path.parent)))


def _by_setting(found: list[Difference]) -> dict[tuple[str, str], Difference]:
    return {(d.stage, d.setting): d for d in found}


# --- the comparison ----------------------------------------------------------------------


def test_launch_plan_tiny_runs_what_was_planned():
    _, plan, stages = _planned(TINY)
    assert [s.name for s in stages][:3] == ["data", "tokenize", "pretrain"]
    assert differences(plan, stages) == []


def test_launch_plan_reports_each_injected_difference():
    _, plan, stages = _planned(TINY)
    runs = copy.deepcopy(stages)
    pretrain = next(s for s in runs if s.name == "pretrain")
    pretrain.config["parallel"]["micro_batch"] = 4          # the plan has 8
    pretrain.config["schedule"]["seq_len"] = 64             # the plan has 128
    sft = next(s for s in runs if s.name == "sft")
    sft.config["seq_len"] = 32
    planned = copy.deepcopy(plan)
    planned["hardware"]["precision"] = "bf16"               # tiny trains in fp32
    found = _by_setting(differences(planned, runs))
    assert found[("pretrain", "parallel.micro_batch")].planned == 8
    assert found[("pretrain", "parallel.micro_batch")].runs == 4
    assert found[("pretrain", "grad_accum")].runs == plan["batch"]["sequences"] // 4
    assert (found[("pretrain", "schedule.seq_len")].planned, found[("pretrain", "schedule.seq_len")].runs) == (128, 64)
    assert (found[("pretrain", "precision")].planned, found[("pretrain", "precision")].runs) == ("bf16", "fp32")
    assert (found[("sft", "seq_len")].planned, found[("sft", "seq_len")].runs) == (128, 32)
    assert "planned 8, runs 4" in found[("pretrain", "parallel.micro_batch")].text()
    assert len(found) == 5, [d.text() for d in found.values()]


def test_launch_plan_reports_stages_missing_on_either_side():
    _, plan, stages = _planned(TINY)
    found = _by_setting(differences(plan, [s for s in stages if s.name not in ("pretrain", "dpo")]))
    assert ("pretrain", "stage") in found and ("dpo", "stage") in found
    unplanned = copy.deepcopy(plan)
    unplanned["alignment"] = [entry for entry in plan["alignment"] if entry["stage"] != "rm"]
    assert _by_setting(differences(unplanned, stages))[("rm", "stage")].runs == "an alignment stage (reward_model)"


def test_launch_plan_alignment_planned_as_it_runs():
    """The planner charges alignment on the devices and precision the alignment runtime uses (one
    process per device of the cluster, FSDP2), so a 2-device run shows no alignment difference; a plan
    that says otherwise is told."""
    _, plan, stages = _planned(TINY, ["cluster.devices=2", "parallel.dp=2"])
    assert not [d for d in differences(plan, stages) if d.stage in ("sft", "rm", "dpo", "ppo")]
    assert {entry["devices"] for entry in plan["alignment"]} == {2}
    planned = copy.deepcopy(plan)
    for entry in planned["alignment"]:
        entry["devices"], entry["precision"] = 4, "bf16"
    found = _by_setting(differences(planned, stages))
    for name in ("sft", "rm", "dpo", "ppo"):
        assert (found[(name, "processes")].planned, found[(name, "processes")].runs) == (4, 2)
        assert (found[(name, "precision")].planned, found[(name, "precision")].runs) == ("bf16", "fp32")


def test_launch_plan_zero_stage_compared_as_the_runtime_executes_it():
    """dp 2 without fsdp runs as ZeRO-2 (FSDP2 without resharding, specc.spec.capabilities): a plan
    that charged ZeRO-0 for it is told so."""
    _, plan, stages = _planned(TINY, ["cluster.devices=2", "parallel.dp=2"])
    planned = copy.deepcopy(plan)
    planned["layout"]["zero_stage"] = 0
    difference = _by_setting(differences(planned, stages))[("pretrain", "zero_stage")]
    assert (difference.planned, difference.runs) == (0, 2)


# --- severities and the refusal ----------------------------------------------------------


def test_launch_plan_findings_have_severities_and_locations():
    result, plan, _ = _planned(TINY, HUGE)
    by_code = {}
    for finding in plan["warnings"]:
        assert finding["severity"] == FINDINGS[finding["code"]].severity
        by_code.setdefault(finding["code"], []).append(finding)
    assert {"P201", "P302"} <= set(by_code) and by_code["P201"][0]["severity"] == "error"
    assert [f["path"] for f in by_code["P302"]] == [f"alignment[{i}]" for i in range(4)]
    assert all(f["severity"] == "warning" for f in by_code.get("P301", []) + by_code.get("P203", []))
    # A plan saved before severities existed is judged by its codes.
    legacy = copy.deepcopy(plan)
    for finding in legacy["warnings"]:
        del finding["severity"], finding["path"]
    assert [f["code"] for f in error_findings(legacy)] == [f["code"] for f in error_findings(plan)]
    # A plan that does not fit but says nothing about it is still an error.
    silent = copy.deepcopy(plan)
    silent["warnings"] = []
    assert [f["code"] for f in error_findings(silent)] == ["P201"]


def test_launch_plan_refusal_points_at_the_spec_key():
    result, plan, _ = _planned(TINY, HUGE)
    diagnostics = refusal(plan, result.source_map.key_at, "specc plan tiny.yaml")
    lines = TINY.read_text().splitlines()
    by_code = {d.code: d for d in diagnostics}
    assert lines[by_code["P201"].position.line - 1].startswith("parallel:")
    assert "GiB per device exceeds the" in by_code["P201"].message
    assert "--allow-unfit" in by_code["P201"].hint and "specc plan tiny.yaml --search" in by_code["P201"].hint
    assert all(d.severity == "error" for d in diagnostics)
    _, fitting, _ = _planned(TINY)
    assert refusal(fitting, result.source_map.key_at) == []


# --- the command line --------------------------------------------------------------------


def test_launch_plan_is_shown_before_a_fitting_launch(tmp_path):
    result = specc("launch", str(TINY), "--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("plan: tiny", "  layout  dp1", "  memory  ", "GiB per device", "fits", "  time    step",
                   "MFU", "days", "what runs: the stages' configs match the plan"):
        assert needle in out, out
    assert out.index("plan: tiny") < out.index("bundle: ")


def test_launch_plan_unfit_spec_is_refused_and_nothing_runs(tmp_path):
    out = tmp_path / "o"
    result = specc("launch", str(TINY), *_sets(HUGE), "--out", str(out))  # local executor, not a dry run
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "DOES NOT FIT" in result.stdout
    assert f"{TINY}:" in result.stderr and "error[P201] parallel:" in result.stderr
    assert "hint:" in result.stderr and "--allow-unfit" in result.stderr
    assert "nothing emitted" in result.stderr
    assert not out.exists()  # no bundle, no run directory, no job


def test_launch_plan_allow_unfit_emits_and_says_so(tmp_path):
    out = tmp_path / "o"
    result = specc("launch", str(TINY), *_sets(HUGE), "--dry-run", "--allow-unfit", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "error[P201]" in result.stderr and "--allow-unfit: going on despite" in result.stderr
    (bundle,) = out.iterdir()
    assert "- error: P201: " in (bundle / "README.md").read_text()
    # The bundle keeps its plan: launching it again needs the flag again, and nothing runs without it.
    for target in (bundle, bundle / "plan.json"):
        again = specc("launch", str(target))
        assert again.returncode == 1 and "error[P201]" in again.stderr and "not launched" in again.stderr
        assert f"{bundle / 'plan.json'}: error[P201]" in again.stderr
    assert not (bundle / "jobs").exists() and not (out / "runs").exists()


def test_launch_plan_refuses_replicated_llama3_8b(tmp_path):
    """Issue 13's reproduction: 8B without FSDP or recompute emitted and submitted with exit 0."""
    out = tmp_path / "o"
    for extra in (["--dry-run"], ["--executor", "slurm", "--no-wait"]):
        result = specc("launch", str(LLAMA8B), *_sets(REPLICATED), *extra, "--no-path-checks", "--out", str(out))
        assert result.returncode == 1, (extra, result.stdout, result.stderr)
        assert "error[P201] parallel:" in result.stderr and "refusing to launch" in result.stderr
        assert not out.exists()
    fitting = specc("launch", str(LLAMA8B), "--dry-run", "--no-path-checks", "--out", str(out))
    assert fitting.returncode == 0 and "fits" in fitting.stdout, fitting.stderr


def test_launch_plan_saved_plan_cannot_be_changed_silently(tmp_path):
    spec = tiny_copy(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert specc("plan", str(spec), "-o", str(plan_file)).returncode == 0
    out = tmp_path / "o"
    overridden = specc("launch", str(plan_file), "--spec", str(spec), "--set", "schedule.steps=5", "--out", str(out))
    assert overridden.returncode == 1 and "saved plan" in overridden.stderr
    assert f"hint: re-plan with the override (`specc plan {spec} --set schedule.steps=5" in overridden.stderr
    executor = specc("launch", str(plan_file), "--spec", str(spec), "--executor", "slurm", "--out", str(out))
    assert executor.returncode == 1 and "with cluster.executor=slurm no longer matches" in executor.stderr
    spec.write_text(TINY.read_text().replace("micro_batch: 8", "micro_batch: 4"))
    changed = specc("launch", str(plan_file), "--spec", str(spec), "--out", str(out))
    assert changed.returncode == 1 and "layout.micro_batch: 8 -> 4" in changed.stderr, changed.stderr
    assert "hint: review and save the new plan" in changed.stderr
    assert not out.exists()


def test_launch_plan_saved_unfit_plan_is_refused(tmp_path):
    plan_file = tmp_path / "plan.json"
    assert specc("plan", str(TINY), *_sets(HUGE), "-o", str(plan_file)).returncode == 0
    out = tmp_path / "o"
    result = specc("launch", str(plan_file), "--spec", str(TINY), "--dry-run", "--out", str(out))
    assert result.returncode == 1 and "error[P201]" in result.stderr and not out.exists()
    allowed = specc("launch", str(plan_file), "--spec", str(TINY), "--dry-run", "--allow-unfit", "--out", str(out))
    assert allowed.returncode == 0, allowed.stderr
