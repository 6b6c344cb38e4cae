"""Launch honours the plan: refuse what the plan says will not fit, and state every way the
stages the bundle runs differ from what the plan charged.

Both are torch-free and run before anything is written or submitted (Terraform's plan/apply:
what is applied is what was shown).

- `refusal(plan, locate)`: the plan's error-level findings (`specc.plan.findings`) as located
  diagnostics; `specc launch` stops on them unless `--allow-unfit`.
- `differences(plan, stages)`: the plan's layout, degrees, batch, lengths, precision and device
  counts against each stage's `config.json` params as its runtime will read them. The plan
  prices one configuration; a stage that runs another (a ZeRO stage the runtime executes
  differently, alignment on fewer devices or in another precision than charged) is reported
  setting by setting, so nobody mistakes the plan's figures for the job's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from specc.catalog import load_catalog
from specc.diagnostics.diagnostic import Diagnostic, Position
from specc.pipeline import ALIGNMENT, STAGE_KINDS
from specc.plan.findings import FINDINGS, error_findings, path_of
from specc.plan.params import count_parameters
from specc.spec.capabilities import Capabilities, capabilities_for
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec

TRAINING_STAGES = tuple(kind.name for kind in STAGE_KINDS if kind.spans_cluster and kind.name != ALIGNMENT)

LAYOUT_SETTINGS = ("dp", "tp", "pp", "cp", "ep", "vpp", "hsdp_replicas", "fsdp", "sp", "micro_batch", "recompute",
                   "selective_policy", "pp_schedule", "precision", "fp8_recipe", "compile", "grad_sync")
"""Keys of the plan's `layout` that the training stage reads under the same name in
`params.parallel` (zero_stage and grad_accum are compared as the runtime executes them;
fp8_recipe is in the layout of fp8 plans only)."""

ALLOW_HINT = "or pass --allow-unfit to launch anyway"


# --- refusing what does not fit ----------------------------------------------------------


def _key_path(dotted: str) -> tuple:
    """`alignment[2]` -> ("alignment", 2); `deploy.targets[0]` -> ("deploy", "targets", 0)."""
    return tuple(int(part[1:-1]) if part.startswith("[") else part
                 for part in re.findall(r"\[\d+\]|[^.\[\]]+", dotted))


def _hint(code: str, plan_command: str) -> str:
    if code in ("P201", "P206"):
        return f"`{plan_command} --search` ranks the layouts that fit; {ALLOW_HINT}"
    if code == "P302":
        return f"shorten the stage's seq_len or batch_size, or use a smaller model; {ALLOW_HINT}"
    return f"change the spec until `{plan_command}` shows no error; {ALLOW_HINT}"


def refusal(plan: dict, locate: Callable[[tuple], Position], plan_command: str = "specc plan SPEC") \
        -> list[Diagnostic]:
    """The plan's error-level findings as diagnostics at the spec keys they are about
    (`locate` maps a key path to its position: a spec's source map, or a plan file);
    `plan_command` re-plans the spec (shown in hints)."""
    diagnostics = []
    for finding in error_findings(plan):
        code, path = str(finding["code"]), path_of(finding)
        kind = FINDINGS.get(code)
        message = finding["message"] if kind is None else f"{kind.summary}: {finding['message']}"
        diagnostics.append(Diagnostic("error", code, message, locate(_key_path(path)), path,
                                      hint=_hint(code, plan_command)))
    return diagnostics


# --- planned vs what runs ----------------------------------------------------------------


@dataclass(frozen=True)
class StageRun:
    """A stage as the bundle runs it: its name, its config (`config.json["params"]`), and the
    devices its processes span (nodes x processes per node) when known."""

    name: str
    config: dict
    devices: int | None = None


def emitted_stage_runs(stages) -> list[StageRun]:
    """StageRuns of the emitter's stages (`specc.emit.stages.Stage`): the training stage spans
    nodes x processes per node devices; the TPU trainer runs one process per host, so its
    device count is its config's alone."""
    return [StageRun(stage.name, stage.config,
                     stage.nodes * stage.procs_per_node if stage.kind.process_per_device else None)
            for stage in stages]


@dataclass(frozen=True)
class Difference:
    """One setting the plan charged differently from what a stage runs."""

    stage: str
    setting: str
    planned: object
    runs: object
    why: str = ""

    def text(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"{self.stage}: {self.setting}: planned {self.planned}, runs {self.runs}{why}"


def differences(plan: dict, stages: Iterable[StageRun]) -> list[Difference]:
    """Every difference between the plan and the stages, training first, then alignment in plan order."""
    stages = list(stages)
    capabilities = _capabilities(plan)
    found: list[Difference] = []
    training = next((stage for stage in stages if stage.name in TRAINING_STAGES), None)
    if training is None:
        if plan.get("layout"):
            found.append(Difference("pretrain", "stage", "a training stage", "none (no pretrain stage in the bundle)"))
    else:
        found += _training_differences(plan, training, capabilities)
    found += _alignment_differences(plan, stages, capabilities)
    return found


def _capabilities(plan: dict) -> Capabilities | None:
    accelerator = load_catalog().get(plan.get("hardware", {}).get("accelerator", ""))
    return capabilities_for(accelerator) if accelerator is not None else None


def _check(found: list[Difference], stage: str, setting: str, planned, runs, why: str = "") -> None:
    if planned is not None and planned != runs:
        found.append(Difference(stage, setting, planned, runs, why))


def _training_differences(plan: dict, stage: StageRun, capabilities: Capabilities | None) -> list[Difference]:
    """The plan's layout, batch, lengths, steps and devices against the training stage's params,
    read the way `specc.runtime.train` reads them."""
    found: list[Difference] = []
    layout, hardware = plan.get("layout", {}), plan.get("hardware", {})
    parallel = ParallelSpec.model_validate(stage.config["parallel"])
    schedule = ScheduleSpec.model_validate(stage.config["schedule"])
    name = stage.name
    for key in LAYOUT_SETTINGS:
        if key in layout:
            _check(found, name, f"parallel.{key}", layout[key], getattr(parallel, key))
    if layout.get("recompute") == "full":  # the layout names recompute_every only when it is not 1
        _check(found, name, "parallel.recompute_every", layout.get("recompute_every", 1), parallel.recompute_every)
    if layout.get("precision") is None or layout.get("precision") == parallel.precision:
        _check(found, name, "precision", hardware.get("precision"), parallel.precision,
               "the plan's peak FLOP/s and memory are for the planned precision")
    if capabilities is not None and "zero_stage" in layout and isinstance(parallel.dp, int):
        shard_ranks = max(1, parallel.dp * parallel.cp // parallel.hsdp_replicas)
        runs = capabilities.effective_zero_stage(parallel.zero_stage, parallel.fsdp, shard_ranks)
        requested = 3 if parallel.fsdp else parallel.zero_stage
        why = (f"the {capabilities.target} runtime executes ZeRO stages {list(capabilities.sharded_stages)} over "
               f"{shard_ranks} data-parallel rank(s); requested {requested}")
        _check(found, name, "zero_stage", layout["zero_stage"], runs, why)
    batch = schedule.batch_sequences()
    if isinstance(parallel.dp, int) and batch:
        _check(found, name, "grad_accum", layout.get("grad_accum"), batch // (parallel.dp * parallel.micro_batch),
               f"global batch {batch} / (dp {parallel.dp} x micro_batch {parallel.micro_batch})")
    planned_batch = plan.get("batch", {})
    _check(found, name, "schedule.batch_sequences", planned_batch.get("sequences"), batch)
    _check(found, name, "schedule.seq_len", planned_batch.get("seq_len"), schedule.seq_len)
    total = schedule.total_steps()
    if total is not None and stage.config.get("max_steps"):
        total = min(total, int(stage.config["max_steps"]))
    _check(found, name, "steps", plan.get("time", {}).get("steps"), total)
    _check(found, name, "devices", hardware.get("count"), stage.config.get("devices"))
    if stage.devices is not None:
        _check(found, name, "processes", hardware.get("count"), stage.devices, "nodes x processes per node")
    _check(found, name, "accelerator", hardware.get("accelerator"), stage.config.get("accelerator"))
    model = ModelSpec.model_validate(stage.config["model"])
    _check(found, name, "model.params", plan.get("model", {}).get("params"), count_parameters(model).total)
    return found


def _alignment_differences(plan: dict, stages: list[StageRun], capabilities: Capabilities | None) \
        -> list[Difference]:
    """Each planned alignment stage's devices, precision and seq_len against the stage as its
    runtime (`specc.runtime.align`) runs it; stages planned but absent, or run but unplanned."""
    found: list[Difference] = []
    by_name = {stage.name: stage for stage in stages}
    planned = plan.get("alignment") or []
    for entry in planned:
        stage = by_name.get(entry["stage"])
        if stage is None:
            found.append(Difference(entry["stage"], "stage", f"an alignment stage ({entry['type']})",
                                    "none (not in the bundle)"))
            continue
        if stage.devices is not None and entry.get("type") != "constitutional":
            _check(found, stage.name, "processes", entry.get("devices"), stage.devices, "nodes x processes per node")
        _check(found, stage.name, "precision", entry.get("precision"), stage.config.get("precision", "fp32"),
               "the plan's alignment memory and time are for the planned precision")
        seq_len = stage.config.get("stage", {}).get("seq_len") or stage.config.get("seq_len")
        _check(found, stage.name, "seq_len", entry.get("seq_len"), seq_len)
    names = {entry["stage"] for entry in planned}
    for stage in stages:
        kind = stage.config.get("stage", {}).get("type") if isinstance(stage.config.get("stage"), dict) else None
        if kind and stage.name not in names:
            found.append(Difference(stage.name, "stage", "none (its memory was not planned)",
                                    f"an alignment stage ({kind})"))
    return found
