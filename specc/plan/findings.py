"""Severity and spec location of every plan finding (the plan's `warnings`, codes `P…`).

Why severities: `specc launch` refuses a plan with an error-level finding (unless
`--allow-unfit`), so "error" must mean one thing. An error is a prediction that a stage of
this launch will fail as written: its memory does not fit on the devices it runs on. Everything
else (slow, under-trained, communication-bound, a serving target that needs more memory than
its own hardware) is a warning: the job still runs.

Each finding also names the spec key it is about (`path`), so a refusal points at
`spec.yaml:line:col` like a validate diagnostic does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class FindingKind:
    severity: Severity
    path: str
    """The spec key the finding is about (dotted, `[i]` for list items)."""
    summary: str


FINDINGS: dict[str, FindingKind] = {
    "P201": FindingKind("error", "parallel", "the training layout does not fit in device memory"),
    "P202": FindingKind("warning", "schedule.checkpoint_interval",
                        "checkpoints are further apart than the Slurm time limit"),
    "P203": FindingKind("warning", "schedule", "token budget far from compute-optimal"),
    "P204": FindingKind("warning", "parallel", "large pipeline bubble"),
    "P205": FindingKind("warning", "parallel", "communication-bound layout"),
    "P206": FindingKind("error", "parallel", "no searched layout fits in device memory"),
    "P207": FindingKind("warning", "parallel", "a searched layout is faster than the spec's"),
    "P210": FindingKind("warning", "schedule.checkpoint_interval",
                        "the checkpoint interval is far from the optimum for the cluster's failure rate"),
    "P211": FindingKind("warning", "cluster.slurm.max_requeues",
                        "max_requeues cannot cover the time-limit requeues and expected interruptions"),
    "P212": FindingKind("warning", "cluster.reliability", "low expected goodput even at the optimal checkpoint interval"),
    "P230": FindingKind("warning", "cluster.slurm.data_array_tasks",
                        "a data-stage Slurm job array is wider than Slurm's default MaxArraySize"),
    "P250": FindingKind("warning", "parallel",
                        "the planned TPU memory per chip differs from libtpu's compile of the step by more than 10%"),
    "P301": FindingKind("warning", "deploy.targets", "a deploy target does not fit its serving hardware"),
    "P302": FindingKind("error", "alignment", "an alignment stage does not fit in device memory"),
}
"""Every plan finding code. P301 is a warning: the deploy stage exports and measures on the
launch's own devices; the serving hardware it predicts for is not part of this launch."""


def severity_of(finding: dict) -> Severity:
    """A finding's severity: as recorded, else from its code (plans saved before severities)."""
    recorded = finding.get("severity")
    if recorded in ("error", "warning"):
        return recorded
    kind = FINDINGS.get(str(finding.get("code")))
    return kind.severity if kind else "warning"


def path_of(finding: dict) -> str:
    """The spec key a finding is about: as recorded, else its code's section."""
    kind = FINDINGS.get(str(finding.get("code")))
    return finding.get("path") or (kind.path if kind else "")


def classified(findings: list[dict]) -> list[dict]:
    """The findings with `severity` and `path` filled in (what `build_plan` records)."""
    return [{**finding, "severity": severity_of(finding), "path": path_of(finding)} for finding in findings]


def error_findings(plan: dict) -> list[dict]:
    """The plan's error-level findings; a plan whose memory does not fit without a finding
    saying so (a hand-edited or foreign plan.json) gets P201's."""
    errors = [finding for finding in plan.get("warnings", []) if severity_of(finding) == "error"]
    memory = plan.get("memory") or {}
    if memory.get("fits") is False and not any(finding.get("code") in ("P201", "P206") for finding in errors):
        capacity = plan.get("hardware", {}).get("memory_gib", 0.0)
        errors.insert(0, {"code": "P201", "severity": "error", "path": "parallel", "message": (
            f"predicted {memory.get('per_device_gib', 0.0):.1f} GiB per device exceeds the {capacity:.1f} GiB "
            f"of the accelerator")})
    return errors
