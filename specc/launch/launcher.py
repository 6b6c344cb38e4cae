"""Launch a bundle's stages with submitit: `local` (LocalExecutor) or `slurm` (SlurmExecutor).

Order and dependencies: stages run in their numbered order. On Slurm every stage is
submitted at once, each with `--dependency=afterok:<previous>` (never `afterany`: a
failed stage must stop its dependants); when waiting, the dependants of a failed stage
are cancelled explicitly too (clusters without `kill_invalid_depend` would leave them
pending forever). Locally each stage is submitted when the previous one succeeded.

Skipping: a stage is skipped when it and every stage before it have a `_SUCCESS.json`
recording their current config, and the outputs it records are still there with their
sizes (and checksums, for files modified since: `specc.io.is_complete`); a stage
whose outputs were deleted or changed runs again, from scratch. From the first stage
that must run, every later stage runs too (its inputs may have changed); outputs that
belong to another config or to inputs being regenerated are moved aside first, so that
no stage skips itself or resumes from a checkpoint of different work.

What runs is what was reviewed: the bundle's manifest is checked before anything is
submitted, and the Slurm options are read back from each stage's `job.sbatch`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from specc.emit.bundle import MANIFEST, STATE_DIR, sha256_text
from specc.pipeline import output_dirname
from specc.launch.lock import LockHeld, launch_lock
from specc.integrity import listing
from specc.io import atomic_write_json, config_hash, is_complete, output_problems, read_marker
from specc.launch.readback import load_manifest, load_stage_config, read_text, stage_dirnames

EXECUTORS = ("local", "slurm")
LAUNCH_RECORD = "launch.json"
LAUNCH_MARKER = "_LAUNCHED.json"
"""Written in a stage's output directory before it runs: the config hash its outputs belong to."""


class LaunchError(Exception):
    """The bundle cannot be launched (modified, incomplete, unknown executor)."""


@dataclass(frozen=True)
class BundleStage:
    """A stage as found in an emitted bundle."""

    dirname: str
    config: dict
    directives: dict[str, str | bool]

    @property
    def name(self) -> str:
        return self.config["stage"]

    def outputs(self, bundle_dir: Path) -> Path:
        return (bundle_dir / self.config["run_dir"] / output_dirname(self.name)).resolve()


@dataclass
class StageRecord:
    """What happened to one stage in a launch (saved in jobs/launch.json)."""

    stage: str
    dirname: str
    state: str = "pending"
    """`skipped`, `submitted`, `completed`, `failed`, `cancelled`."""
    job_id: str | None = None
    reason: str | None = None
    seconds: float | None = None


@dataclass
class LaunchRecord:
    bundle: str
    executor: str
    folder: str
    stages: list[StageRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.state in ("skipped", "completed", "submitted") for s in self.stages)


# --- reading a bundle --------------------------------------------------------------------


def verify_manifest(bundle_dir: Path) -> dict:
    """The manifest, after checking that every file it lists is present and unchanged."""
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise LaunchError(f"{bundle_dir}: not a bundle (no {MANIFEST}); emit one with `specc launch SPEC --dry-run`")
    manifest = load_manifest(path)
    for relative, digest in manifest["files"].items():
        file = bundle_dir / relative
        if not file.is_file():
            what = "is not a regular file (a directory, device or link to one)" if file.exists() else "is missing"
            raise LaunchError(f"{bundle_dir}: {relative} {what}; re-emit the bundle")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:  # a bundle holds UTF-8 text only: overwritten or corrupted
            raise LaunchError(f"{bundle_dir}: {relative} cannot be read as the UTF-8 text specc wrote "
                              f"({error}); re-emit with `specc launch SPEC --force`") from None
        if sha256_text(text) != digest:
            raise LaunchError(f"{bundle_dir}: {relative} was modified after emit (sha256 differs from "
                              f"{MANIFEST}); re-emit with `specc launch SPEC --force`")
    return manifest


def read_stages(bundle_dir: Path) -> list[BundleStage]:
    """Stages in order, with config and the Slurm options of their job.sbatch: the stage
    directories the manifest lists (anything else in `stages/` is not a stage of this bundle;
    `specc.launch.readback.stray_stage_entries` names it)."""
    stages = []
    for name in stage_dirnames(load_manifest(bundle_dir / MANIFEST)):
        directory = bundle_dir / "stages" / name
        config = load_stage_config(directory / "config.json")
        try:
            directives = parse_sbatch_directives(read_text(directory / "job.sbatch"))
        except ValueError as error:  # an unbalanced quote in an edited #SBATCH line
            raise LaunchError(f"{directory / 'job.sbatch'}: {error}; re-emit the bundle") from None
        stages.append(BundleStage(directory.name, config, directives))
    return stages


def parse_sbatch_directives(script: str) -> dict[str, str | bool]:
    """`#SBATCH --key=value` / `#SBATCH --flag` lines -> {key: value or True} (values unquoted)."""
    directives: dict[str, str | bool] = {}
    for line in script.splitlines():
        match = re.fullmatch(r"#SBATCH --([a-z-]+)(?:=(.*))?", line.strip())
        if match:
            value = match.group(2)
            directives[match.group(1)] = True if value is None else shlex.split(value)[0]
    return directives


def max_requeues(bundle_dir: Path) -> int:
    spec = yaml.safe_load((bundle_dir / "spec.resolved.yaml").read_text())
    return int(spec["cluster"]["slurm"]["max_requeues"])


def stages_to_run(bundle_dir: Path, stages: list[BundleStage]) -> int:
    """Index of the first stage that must run (len(stages) when all are complete)."""
    for index, stage in enumerate(stages):
        if not is_complete(stage.outputs(bundle_dir), stage.config):
            return index
    return len(stages)


# --- launching ---------------------------------------------------------------------------

Echo = Callable[[str], None]


def launch(bundle_dir: Path, executor: str, wait: bool = True, echo: Echo = print,
           lock_wait_s: float = 0.0) -> LaunchRecord:
    """Submit the stages of `bundle_dir` that must run; wait for them unless `wait` is False (Slurm).
    Another launch holding the bundle is waited for up to `lock_wait_s` seconds, else refused."""
    if executor not in EXECUTORS:
        raise LaunchError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    bundle_dir = bundle_dir.resolve()
    verify_manifest(bundle_dir)
    try:
        with launch_lock(bundle_dir / STATE_DIR, lock_wait_s, on_wait=echo):
            return _launch_locked(bundle_dir, executor, wait, echo)
    except LockHeld as held:
        raise LaunchError(f"{bundle_dir}: {held}") from None


def _launch_locked(bundle_dir: Path, executor: str, wait: bool, echo: Echo) -> LaunchRecord:
    """The body of `launch`, run while this process holds the bundle's launch lock."""
    stages = read_stages(bundle_dir)
    first = stages_to_run(bundle_dir, stages)
    folder = _new_launch_folder(bundle_dir)
    record = LaunchRecord(bundle_dir.name, executor, str(folder),
                          [StageRecord(s.name, s.dirname) for s in stages])
    for stage, entry in zip(stages[:first], record.stages):
        entry.state, entry.reason = "skipped", "complete for this config"
        echo(f"{stage.dirname}: skipped (complete for this config)")
    for position, stage in enumerate(stages[first:]):
        _prepare_outputs(bundle_dir, stage, upstream_reruns=position > 0, echo=echo)
    pending = list(zip(stages[first:], record.stages[first:]))
    requeues = max_requeues(bundle_dir)
    if executor == "local":
        _run_local(bundle_dir, folder, pending, requeues, record, echo)
    else:
        jobs = _submit_slurm(bundle_dir, folder, pending, requeues, record, echo)
        if wait:
            _wait_slurm(jobs, pending, record, bundle_dir, echo)
    _save(bundle_dir, record)
    return record


def _prepare_outputs(bundle_dir: Path, stage: BundleStage, upstream_reruns: bool, echo: Echo) -> None:
    """Make sure a stage about to run resumes only its own work.

    Stages resume from whatever their directory holds (the trainer from its newest
    checkpoint), so outputs made by another config, or from inputs an upstream stage is
    about to regenerate, are moved aside to `<run_dir>/.replaced/` first. Outputs of an
    interrupted run of this same config stay, and are resumed.
    """
    outputs = stage.outputs(bundle_dir)
    launched = outputs / LAUNCH_MARKER
    previous = _recorded_hash(launched) or _recorded_hash(outputs / "_SUCCESS.json")
    current = config_hash(stage.config)
    marker = read_marker(outputs)
    # finished for this config, but a recorded output was deleted, truncated or changed since:
    # start over rather than resume on top of it
    damaged = output_problems(outputs, marker) if marker and marker.get("config_sha256") == current else []
    stale = upstream_reruns or (previous is not None and previous != current) or bool(damaged)
    if outputs.exists() and stale:
        aside = outputs.parent / ".replaced" / f"{outputs.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(outputs, aside)
        why = ("its inputs are being regenerated" if upstream_reruns else
               ("its outputs changed after it finished: " + listing(damaged)) if damaged else
               "they came from another config")
        echo(f"{stage.dirname}: previous outputs moved to {aside} ({why})")
    outputs.mkdir(parents=True, exist_ok=True)
    atomic_write_json(launched, {"config_sha256": current})


def _recorded_hash(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("config_sha256")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _new_launch_folder(bundle_dir: Path) -> Path:
    """`jobs/<n>/`: a fresh submitit folder per launch (job ids restart when Slurm's state is wiped,
    and a reused folder would then hold another launch's results)."""
    root = bundle_dir / STATE_DIR
    root.mkdir(exist_ok=True)
    numbers = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    folder = root / f"{max(numbers, default=0) + 1:04d}"
    folder.mkdir()
    return folder


def _save(bundle_dir: Path, record: LaunchRecord) -> None:
    atomic_write_json(bundle_dir / STATE_DIR / LAUNCH_RECORD, asdict(record))


def _task(bundle_dir: Path, stage: BundleStage, requeues: int, environment: dict[str, str] | None = None):
    from specc.launch.task import StageTask  # imports submitit: only when something is submitted

    return StageTask(str(bundle_dir), f"stages/{stage.dirname}", requeues, sys.executable, environment)


def _timeout_minutes(stage: BundleStage) -> int:
    days, clock = str(stage.directives.get("time", "0-04:00:00")).split("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _signal_seconds(stage: BundleStage) -> int:
    return int(str(stage.directives.get("signal", "USR2@90")).split("@")[1])


def _run_local(bundle_dir: Path, folder: Path, pending: list, requeues: int, record: LaunchRecord,
               echo: Echo) -> None:
    """One stage after another on this machine, each a submitit LocalExecutor job."""
    import submitit

    for position, (stage, entry) in enumerate(pending):
        executor = submitit.LocalExecutor(folder=folder / stage.dirname)
        executor.update_parameters(timeout_min=_timeout_minutes(stage), signal_delay_s=_signal_seconds(stage),
                                   tasks_per_node=1)
        job = executor.submit(_task(bundle_dir, stage, requeues))
        entry.state, entry.job_id = "submitted", str(job.job_id)
        _save(bundle_dir, record)
        echo(f"{stage.dirname}: running locally (job {job.job_id}, logs in {folder / stage.dirname})")
        if not _collect(job, stage, entry, echo):
            for _, later in pending[position + 1:]:
                later.state, later.reason = "cancelled", f"{stage.name} failed"
                echo(f"{later.dirname}: not run ({stage.name} failed)")
            return


def _collect(job, stage: BundleStage, entry: StageRecord, echo: Echo) -> bool:
    """Wait for one job; record and print its outcome. True if it succeeded."""
    import submitit

    waiting = getattr(echo, "wait_for", None)  # specc.launch.progress.LiveProgress: live lines meanwhile
    if waiting is not None:
        waiting(job, stage)
    try:
        result = job.results()[0]  # a multi-node stage has one task per node; node 0's result speaks for it
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as error:
        entry.state, entry.reason = "failed", failure_reason(str(error))
        echo(f"{stage.dirname}: FAILED: {entry.reason}")
        return False
    entry.state, entry.seconds = "completed", result.get("seconds")
    echo(f"{stage.dirname}: completed in {entry.seconds} s")
    return True


def failure_reason(message: str) -> str:
    """The classified reason from a job's error text (the `StageFailed: ...` line), else its last line."""
    found = re.findall(r"StageFailed: (.+)", message)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown failure"


def _submit_slurm(bundle_dir: Path, folder: Path, pending: list, requeues: int, record: LaunchRecord,
                  echo: Echo) -> list:
    """Submit every pending stage at once, each after the previous one (afterok)."""
    import submitit

    jobs = []
    previous: str | None = None
    for stage, entry in pending:
        executor = submitit.SlurmExecutor(folder=folder / stage.dirname, max_num_timeout=requeues)
        try:
            previous = _submit_array_part(executor, bundle_dir, stage, previous, requeues, echo)
            executor.update_parameters(**slurm_parameters(stage, previous))
            job = executor.submit(_task(bundle_dir, stage, requeues))
        except (submitit.core.utils.FailedJobError, OSError) as error:
            for submitted in jobs:  # an incomplete chain must not run half the pipeline
                submitted.cancel(check=False)
            raise LaunchError(f"{stage.dirname}: sbatch failed: {str(error).strip() or type(error).__name__}"
                              + (f" (cancelled the {len(jobs)} job(s) already submitted)" if jobs else "")) from None
        jobs.append(job)
        entry.state, entry.job_id = "submitted", str(job.job_id)
        previous = str(job.job_id).split("_")[0]
        echo(f"{stage.dirname}: submitted Slurm job {job.job_id}")
        _save(bundle_dir, record)
    return jobs


def _submit_array_part(executor, bundle_dir: Path, stage: BundleStage, after: str | None, requeues: int,
                       echo: Echo) -> str | None:
    """For a stage with `array_tasks` > 1 (the data stage's filter-and-sign phase): submit that many
    copies as one Slurm job array; the stage's own job then runs after all of them (afterok).
    Returns the job the stage's own job must wait for."""
    tasks = int(stage.config.get("params", {}).get("array_tasks", 1))
    if tasks <= 1:
        return after
    executor.update_parameters(**slurm_parameters(stage, after), array_parallelism=tasks)
    with executor.batch():
        array = [executor.submit(_task(bundle_dir, stage, requeues)) for _ in range(tasks)]
    array_id = str(array[0].job_id).split("_")[0]
    echo(f"{stage.dirname}: submitted Slurm job array {array_id} ({tasks} tasks)")
    return _submit_bucket_array(executor, bundle_dir, stage, array_id, requeues, echo)


def _submit_bucket_array(executor, bundle_dir: Path, stage: BundleStage, after: str, requeues: int,
                         echo: Echo) -> str:
    """The data stage's sharded-dedup bucket phase as a second array (afterok on the first, whose
    tasks scattered the band keys): one task per key range, so no job holds every bucket. Its
    tasks run the stage with SPECC_DATA_PHASE=buckets (`specc.runtime.data.stage`)."""
    params = stage.config.get("params", {})
    dedup = params.get("dedup", {})
    tasks = int(params.get("bucket_tasks", 1))
    if not (dedup.get("exact") or dedup.get("minhash")):
        return after
    executor.update_parameters(**slurm_parameters(stage, after), array_parallelism=tasks)
    with executor.batch():
        array = [executor.submit(_task(bundle_dir, stage, requeues, {"SPECC_DATA_PHASE": "buckets"}))
                 for _ in range(tasks)]
    array_id = str(array[0].job_id).split("_")[0]
    echo(f"{stage.dirname}: submitted Slurm bucket array {array_id} ({tasks} tasks, afterok:{after})")
    return array_id


def slurm_parameters(stage: BundleStage, after: str | None) -> dict:
    """submitit SlurmExecutor parameters from a stage's job.sbatch options (+ the dependency)."""
    directives = dict(stage.directives)
    parameters: dict = {"time": _timeout_minutes(stage), "signal_delay_s": _signal_seconds(stage)}
    directives.pop("time", None)
    directives.pop("signal", None)
    known = {"job-name", "partition", "account", "qos", "constraint", "mail-user", "mail-type", "mem",
             "nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-node", "exclusive"}
    numeric = {"nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-node"}
    additional: dict = {}
    for key, value in directives.items():
        converted = int(value) if key in numeric else value
        (parameters if key in known else additional)[key.replace("-", "_")] = converted
    if after is not None:
        additional["dependency"] = f"afterok:{after}"
    parameters["additional_parameters"] = additional
    return parameters


def _wait_slurm(jobs: list, pending: list, record: LaunchRecord, bundle_dir: Path, echo: Echo) -> None:
    """Wait for the chain in order; after a failure cancel the dependants still queued."""
    for position, (job, (stage, entry)) in enumerate(zip(jobs, pending)):
        succeeded = _collect(job, stage, entry, echo)
        _save(bundle_dir, record)
        if succeeded:
            continue
        for later_job, (later, later_entry) in zip(jobs[position + 1:], pending[position + 1:]):
            later_job.cancel(check=False)
            later_entry.state, later_entry.reason = "cancelled", f"{stage.name} failed (afterok)"
            echo(f"{later.dirname}: cancelled ({stage.name} failed)")
        return
