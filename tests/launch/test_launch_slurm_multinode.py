"""Training across two Slurm nodes: `specc launch --executor slurm` of the tiny pipeline with
`cluster.nodes: 2`, on the local cluster's multiple-slurmd nodes (scripts/slurm-local.sh).

The bundle's own job.sbatch options and run.sh do it: one task per node (real `srun`), torchrun
on each meeting at the head node (c10d rendezvous), 2 nodes x 2 gloo processes. Its loss must
equal the same 4-process training on one node, bit for bit: the same ranks, data and reductions.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from launch_helpers import FAST_TRAINING, TINY, launch_record, slurm_job_field, specc, success
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

pytestmark = pytest.mark.slow  # a real Slurm cluster, two torchrun launches

FOUR_PROCESSES = [*(o for o in FAST_TRAINING if not o.startswith("schedule.steps=")), "schedule.steps=20",
                  "~eval", "cluster.executor=slurm", "parallel.dp=4", "parallel.micro_batch=4"]
"""dp=4 over gloo, 20 steps; data, tokenize and pretrain only."""
ONE_NODE = [*FOUR_PROCESSES, "cluster.devices=4"]
TWO_NODES = [*FOUR_PROCESSES, "+cluster.nodes=2", "+cluster.devices_per_node=2", "cluster.devices=4"]


def _launch(out: Path, overrides: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    arguments = [item for override in overrides for item in ("--set", override)]
    result = specc("launch", str(TINY), "--executor", "slurm", "--out", str(out), *arguments)
    bundle = Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))
    return result, bundle


def _pretrain(bundle: Path) -> dict:
    return next(entry for entry in launch_record(bundle)["stages"] if entry["stage"] == "pretrain")


def test_two_nodes_train_with_the_loss_of_one(slurm_cluster, tmp_path):
    out = tmp_path / "out"
    single, single_bundle = _launch(out, ONE_NODE)
    assert single.returncode == 0, f"{single.stdout}\n{single.stderr[-4000:]}"
    reference = success(single_bundle, "pretrain")
    # same run directory: data and tokenize are skipped, pretrain (another config) runs again
    double, bundle = _launch(out, TWO_NODES)
    assert double.returncode == 0, f"{double.stdout}\n{double.stderr[-4000:]}"
    assert "01-data: skipped" in double.stdout and "02-tokenize: skipped" in double.stdout

    sbatch = (bundle / "stages" / "03-pretrain" / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "#SBATCH --ntasks-per-node=1" in sbatch
    entry = _pretrain(bundle)
    nodes = slurm_job_field(entry["job_id"], "NodeList")
    listed = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True).stdout.split()
    assert len(listed) == 2, f"pretrain ran on {nodes}"
    # one submitit task per node, each starting torchrun with its node rank
    logs = Path(launch_record(bundle)["folder"]) / "03-pretrain"
    assert {re.search(r"_(\d+)_log\.err$", p.name).group(1) for p in logs.glob("*_log.err")} == {"0", "1"}

    trained = success(bundle, "pretrain")
    assert trained["steps"] == reference["steps"] == 20
    assert trained["final_loss"] == reference["final_loss"], (trained, reference)
    print(f"\npretrain wall time: 1 node x 4 processes {_pretrain(single_bundle)['seconds']} s, "
          f"2 nodes x 2 processes {entry['seconds']} s; final loss {trained['final_loss']}")
