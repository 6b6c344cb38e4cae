"""`specc launch --executor slurm` on a real local Slurm (scripts/slurm-local.sh, with accounting), one node per job.

Covers: the tiny pipeline end to end (pretrain as 2 gloo processes under torchrun), afterok
chaining, relaunch skipping, a failed stage cancelling its dependants, a preempted training
job checkpointing, requeueing and finishing with the loss of an uninterrupted run, an
out-of-memory failure that fails fast without a requeue, and `status` / `cancel`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from launch_helpers import (FAST_TRAINING, SHORT_RUN, TINY, launch_record, run_dir, slurm_job_field, specc, states,
                            success, wait_until)
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

pytestmark = pytest.mark.slow  # a real Slurm cluster

SLURM_TRAINING = [*(o for o in FAST_TRAINING if not o.startswith("schedule.steps=")), "schedule.steps=40",
                  "cluster.devices=2", "parallel.dp=2"]
"""Two training processes (dp=2 on gloo), 40 steps: long enough to be interrupted mid-run."""


def _launch(target: Path, out: Path | None, *options: str, overrides=()) -> subprocess.CompletedProcess:
    arguments = [item for override in overrides for item in ("--set", override)]
    where = ["--executor", "slurm", "--out", str(out)] if out is not None else []
    return specc("launch", str(target), *where, *arguments, *options)


def _bundle_of(result: subprocess.CompletedProcess) -> Path:
    return Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))


def _job_ids(bundle: Path) -> dict[str, str]:
    return {entry["stage"]: entry["job_id"] for entry in launch_record(bundle)["stages"] if entry["job_id"]}


def _accounted_state(job_id: str) -> str:
    output = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True,
                            text=True).stdout.split()
    return output[0] if output else ""


@pytest.fixture(scope="module")
def tiny_on_slurm(slurm_cluster, tmp_path_factory):
    """The tiny pipeline run once on Slurm, with what its launch recorded and `specc status` said
    taken at once: later tests relaunch the bundle (rewriting its launch record) or reuse its
    finished stages, in whatever order they run, and no test but the relaunch writes to its run."""
    out = tmp_path_factory.mktemp("slurm")
    result = _launch(TINY, out, overrides=SLURM_TRAINING)
    bundle = _bundle_of(result)
    return {"result": result, "bundle": bundle, "out": out, "final": success(bundle, "pretrain"),
            "record": launch_record(bundle), "status": specc("status", str(bundle))}


def _out_reusing(tiny_on_slurm, out: Path, stages=("data", "tokenize")) -> Path:
    """An out directory for another launch of the tiny pipeline whose run reuses the module run's
    finished `stages` (symlinked: the launcher skips them as complete for this config). Tests that
    retrain, interrupt or break the later stages do it there, not in the run the others read."""
    shared = run_dir(tiny_on_slurm["bundle"])
    own = out / shared.relative_to(tiny_on_slurm["out"].resolve())
    own.mkdir(parents=True)
    for stage in stages:
        (own / stage).symlink_to(shared / stage, target_is_directory=True)
    return out


def test_launch_slurm_tiny_pipeline_end_to_end(tiny_on_slurm):
    result, bundle, record = tiny_on_slurm["result"], tiny_on_slurm["bundle"], tiny_on_slurm["record"]
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    assert {e["stage"]: e["state"] for e in record["stages"]} == {
        "data": "completed", "tokenize": "completed", "pretrain": "completed", "eval": "completed"}
    ids = {entry["stage"]: entry["job_id"] for entry in record["stages"] if entry["job_id"]}
    for stage, job_id in ids.items():
        assert wait_until(lambda: _accounted_state(job_id) == "COMPLETED", 60, f"{stage} COMPLETED in sacct")
    folder = Path(record["folder"])
    # Each stage was submitted with an afterok dependency on the one before it.
    for stage, previous in (("02-tokenize", ids["data"]), ("03-pretrain", ids["tokenize"]),
                            ("04-eval", ids["pretrain"])):
        submission = next((folder / stage).glob("*_submission.sh")).read_text()
        assert f"#SBATCH --dependency=afterok:{previous}" in submission
        assert "#SBATCH --requeue" in submission and "#SBATCH --signal=USR2@90" in submission
    # Training ran as two processes (dp=2 over gloo) and finished its schedule.
    log = "".join(p.read_text() for p in (folder / "03-pretrain").glob("*_log.out"))
    assert "dp 2 " in log
    assert tiny_on_slurm["final"]["steps"] == 40
    status = tiny_on_slurm["status"]
    assert status.returncode == 0 and status.stdout.count("completed") == 4
    assert re.search(r"step time: measured [0-9.e-]+ s, predicted [0-9.e-]+ s", status.stdout)


def test_launch_slurm_relaunch_skips_completed_stages(tiny_on_slurm):
    bundle = tiny_on_slurm["bundle"]
    assert success(bundle, "pretrain") == tiny_on_slurm["final"], "the finished training run was replaced"
    result = _launch(bundle, None)
    assert result.returncode == 0, result.stderr
    assert set(states(bundle).values()) == {"skipped"} and not _job_ids(bundle)
    assert len(states(bundle)) == 4


def test_launch_slurm_interrupted_training_resumes_with_the_same_loss(tiny_on_slurm, tmp_path):
    """Stop training twice: `scontrol requeue` (what Slurm does to a --requeue job on node failure:
    SIGTERM, requeue) and a preemption as submitit sees it (SIGTERM, then USR2). Each time the
    trainer checkpoints, the job is requeued and resumes; it ends with the uninterrupted run's loss."""
    reference = tiny_on_slurm["final"]
    assert reference, "the uninterrupted run did not finish"
    result = _launch(TINY, _out_reusing(tiny_on_slurm, tmp_path / "out"), "--no-wait", overrides=SLURM_TRAINING)
    assert result.returncode == 0, result.stderr
    bundle = _bundle_of(result)
    training = run_dir(bundle) / "pretrain"
    job_id = _job_ids(bundle)["pretrain"]
    logs = Path(launch_record(bundle)["folder"]) / "03-pretrain"

    def starts() -> list[int]:
        text = "".join(p.read_text() for p in logs.glob("*_log.out"))
        return [int(m) for m in re.findall(r"steps (\d+)->40", text)]

    def training_after_start(count: int):
        """The count-th start of the trainer has logged a training step."""
        return lambda: len(starts()) >= count and training.joinpath("metrics.jsonl").exists() and \
            len(re.findall(r"^step ", "".join(p.read_text() for p in logs.glob("*_log.out")), re.M)) >= count

    wait_until(training_after_start(1), 300, "the first training step")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_until(training_after_start(2), 300, "training to resume after `scontrol requeue`")
    subprocess.run(["scancel", "--signal", "TERM", job_id], check=True)
    subprocess.run(["scancel", "--signal", "USR2", job_id], check=True)
    wait_until(lambda: (training / "_SUCCESS.json").exists(), 300, "training to finish after the preemption")
    resumed = json.loads((training / "_SUCCESS.json").read_text())
    assert resumed["final_loss"] == reference["final_loss"] and resumed["steps"] == reference["steps"]
    assert int(slurm_job_field(job_id, "Restarts") or 0) == 2
    begun = starts()
    assert len(begun) == 3 and begun[0] == 0 and 0 < begun[1] < begun[2], f"no resume from checkpoints: {begun}"
    assert "StageFailed" not in "".join(p.read_text() for p in logs.glob("*_log.err"))


def test_launch_slurm_out_of_memory_fails_fast_without_requeue(tiny_on_slurm, tmp_path):
    """A model too large for the machine's memory (launched despite the plan's P201 with
    --allow-unfit): the failure is classified and not retried."""
    result = _launch(TINY, _out_reusing(tiny_on_slurm, tmp_path / "out"), "--allow-unfit",
                     overrides=[*SLURM_TRAINING, "model.hidden_size=131072"])
    bundle = _bundle_of(result)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout
    assert states(bundle) == {"data": "skipped", "tokenize": "skipped", "pretrain": "failed", "eval": "cancelled"}
    entry = next(e for e in launch_record(bundle)["stages"] if e["stage"] == "pretrain")
    assert entry["reason"].startswith("pretrain: oom: ") and "can't allocate memory" in entry["reason"]
    assert f"03-pretrain: FAILED: {entry['reason']}" in result.stdout
    assert wait_until(lambda: _accounted_state(entry["job_id"]) == "FAILED", 60, "FAILED in sacct")
    assert slurm_job_field(entry["job_id"], "Restarts") == "0"


def _broken_spec(directory: Path) -> Path:
    """The tiny spec reading a corpus that does not exist: launched with `--no-path-checks` (as for a
    corpus that exists only on the cluster), the pre-flight lets it through and the data stage fails
    at run time."""
    data = yaml.safe_load(TINY.read_text())
    data["corpus"]["sources"] = [{"type": "files", "name": "web", "path": "missing/*.jsonl"}]
    data["filters"] = [f for f in data["filters"] if "sources" not in f]
    path = directory / "broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_launch_slurm_failed_stage_cancels_its_dependants(slurm_cluster, tmp_path):
    result = _launch(_broken_spec(tmp_path), tmp_path / "out", "--no-path-checks", overrides=SHORT_RUN)
    bundle = _bundle_of(result)
    assert result.returncode == 1
    assert states(bundle) == {"data": "failed", "tokenize": "cancelled", "pretrain": "cancelled",
                              "eval": "cancelled"}
    reason = launch_record(bundle)["stages"][0]["reason"]
    assert reason.startswith("data: config: ") and "no files match" in reason
    ids = _job_ids(bundle)
    assert wait_until(lambda: _accounted_state(ids["data"]) == "FAILED", 60, "data FAILED in sacct")
    folder = Path(launch_record(bundle)["folder"])
    for stage, dirname in (("tokenize", "02-tokenize"), ("pretrain", "03-pretrain"), ("eval", "04-eval")):
        assert wait_until(lambda: _accounted_state(ids[stage]) == "CANCELLED", 60, f"{stage} CANCELLED")
        assert not list((folder / dirname).glob("*_log.out")), f"{stage} started although data failed"
        assert not (run_dir(bundle) / stage / "metrics.jsonl").exists()


def test_launch_slurm_status_and_cancel(slurm_cluster, tmp_path):
    result = _launch(TINY, tmp_path / "out", "--no-wait", overrides=FAST_TRAINING)
    assert result.returncode == 0, result.stderr
    bundle = _bundle_of(result)
    ids = _job_ids(bundle)
    assert set(ids) == {"data", "tokenize", "pretrain", "eval"}
    cancelled = specc("cancel", str(bundle))
    assert cancelled.returncode == 0 and cancelled.stdout.count("scancel") == 4
    for stage, job_id in ids.items():
        wait_until(lambda: _accounted_state(job_id).startswith("CANCELLED"), 60, f"{stage} CANCELLED")
    status = specc("status", str(bundle))
    assert status.returncode == 0 and status.stdout.count("cancelled") == 4, status.stdout
    shown = json.loads(specc("status", str(bundle), "--format", "json").stdout)
    assert [row["job_id"] for row in shown["stages"]] == [ids[s] for s in ("data", "tokenize", "pretrain", "eval")]


def test_launch_slurm_rejected_submission_is_a_clear_error(slurm_cluster, tmp_path):
    result = _launch(TINY, tmp_path / "out", overrides=[*SHORT_RUN, "+cluster.slurm.partition=nope"])
    assert result.returncode == 1
    assert "01-data: sbatch failed" in result.stderr and "invalid partition" in result.stderr.lower()
    assert "Traceback" not in result.stderr
