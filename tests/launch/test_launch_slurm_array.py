"""The data stage as a Slurm job array (`cluster.slurm.data_array_tasks`) on the real local Slurm:
the array tasks filter and sign their shares of the corpus and scatter their band keys, a second
array (afterok on the first) pairs the duplicates of one key range per task, the stage's own job
(afterok on that) clusters, filters and mixes, and the chain goes on from there."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from launch_helpers import FAST_TRAINING, TINY, launch_record, run_dir, specc, states
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

from specc.runtime.data import stage as data_stage

pytestmark = pytest.mark.slow  # a real Slurm cluster


def test_launch_slurm_data_stage_runs_as_a_job_array(slurm_cluster, tmp_path):
    overrides = [*FAST_TRAINING, "~eval", "+cluster.slurm.data_array_tasks=2"]
    arguments = [item for override in overrides for item in ("--set", override)]
    result = specc("launch", str(TINY), "--executor", "slurm", "--out", str(tmp_path), *arguments)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    assert "01-data: submitted Slurm job array" in result.stdout
    bundle = Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))
    assert states(bundle)["data"] == "completed" and states(bundle)["pretrain"] == "completed"
    folder = Path(launch_record(bundle)["folder"]) / "01-data"
    submissions = {p.name.split("_")[0]: p.read_text() for p in folder.glob("*_submission.sh")}
    arrays = {job: text for job, text in submissions.items() if "#SBATCH --array=" in text}
    assert len(arrays) == 2 and all("#SBATCH --array=0-1%2" in text for text in arrays.values())
    first = next(job for job, text in arrays.items() if "--dependency" not in text)
    buckets = next(job for job in arrays if job != first)
    assert f"#SBATCH --dependency=afterok:{first}" in arrays[buckets]
    merge = next(text for job, text in submissions.items() if job not in arrays)
    assert f"#SBATCH --dependency=afterok:{buckets}" in merge
    assert f"submitted Slurm bucket array {buckets} (2 tasks" in result.stdout
    data = run_dir(bundle) / "data"
    done = []
    for task in (0, 1):
        records = [json.loads(line) for line in (data / f"metrics.task-{task}.jsonl").read_text().splitlines()]
        done += [r["parts_done"] for r in records if r.get("event") == "filter_phase"]
        paired = [json.loads(line) for line in (data / f"metrics.bucket-task-{task}.jsonl").read_text().splitlines()]
        assert [r["task"] for r in paired if r.get("event") == "buckets"] == [task]  # the bucket array ran
    assert len(done) == 2 and min(done) >= 1
    merge_metrics = [json.loads(line) for line in (data / "metrics.jsonl").read_text().splitlines()]
    merge_phase = [r for r in merge_metrics if r.get("event") == "filter_phase"]
    assert merge_phase and merge_phase[-1]["parts_done"] == 0 and merge_phase[-1]["parts_skipped"] == sum(done)
    dedup_phase = [r for r in merge_metrics if r.get("event") == "dedup_phase"]
    assert dedup_phase[-1]["bucket_tasks"] == 2 and dedup_phase[-1]["bucket_tasks_done"] == 0
    # the same stage config run locally here (one process, a loop over the task ids): the same documents kept
    config = json.loads((bundle / "stages" / "01-data" / "config.json").read_text())
    data_stage.run({**config, "run_dir": str(tmp_path / "local")})
    assert output_text(tmp_path / "local" / "data") == output_text(data)


def output_text(data: Path) -> dict[str, bytes]:
    paths = sorted((data / "output").glob("*.jsonl.gz")) + [data / "dedup" / "removed.jsonl.gz"]
    return {path.name: gzip.decompress(path.read_bytes()) for path in paths}
