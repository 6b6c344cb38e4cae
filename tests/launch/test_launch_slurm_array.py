"""The data stage as a Slurm job array (`cluster.slurm.data_array_tasks`) on the real local Slurm:
the array tasks filter and sign their shares of the corpus, the stage's own job (afterok on the
array) deduplicates and mixes, and the chain goes on from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launch_helpers import FAST_TRAINING, TINY, launch_record, run_dir, specc, states
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

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
    submissions = sorted(p.read_text() for p in folder.glob("*_submission.sh"))
    array = next(s for s in submissions if "#SBATCH --array=" in s)
    assert "#SBATCH --array=0-1%2" in array
    merge = next(s for s in submissions if "#SBATCH --array=" not in s)
    assert "#SBATCH --dependency=afterok:" in merge
    data = run_dir(bundle) / "data"
    done = []
    for task in (0, 1):
        records = [json.loads(line) for line in (data / f"metrics.task-{task}.jsonl").read_text().splitlines()]
        done += [r["parts_done"] for r in records if r.get("event") == "filter_phase"]
    assert len(done) == 2 and min(done) >= 1
    merge_phase = [json.loads(line) for line in (data / "metrics.jsonl").read_text().splitlines()
                   if '"filter_phase"' in line]
    assert merge_phase and merge_phase[-1]["parts_done"] == 0 and merge_phase[-1]["parts_skipped"] == sum(done)
