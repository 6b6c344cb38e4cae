"""Training across two Slurm nodes: `specc launch --executor slurm` of the tiny pipeline with
`cluster.nodes: 2`, on the local cluster's multiple-slurmd nodes (scripts/slurm-local.sh).

The bundle's own job.sbatch options and run.sh do it: one task per node (real `srun`), torchrun
on each meeting at the head node (c10d rendezvous), 2 nodes x 2 gloo processes. Its loss must
equal the same 4-process training on one node, bit for bit: the same ranks, data and reductions.
Then a node dies mid-run (its slurmd and the job's processes on it killed): Slurm marks it down,
the job is requeued onto the spare node and resumes from its checkpoint with the same loss.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from specc.launch.task import last_step
from launch_helpers import (FAST_TRAINING, SLURM_SCRIPT, TINY, launch_record, run_dir, slurm_job_field, specc, success,
                            wait_until)
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

pytestmark = pytest.mark.slow  # a real Slurm cluster, two torchrun launches

FOUR_PROCESSES = [*(o for o in FAST_TRAINING if not o.startswith("schedule.steps=")), "schedule.steps=20",
                  "~eval", "cluster.executor=slurm", "parallel.dp=4", "parallel.micro_batch=4"]
"""dp=4 over gloo, 20 steps (a checkpoint every 5); data, tokenize and pretrain."""
ONE_NODE = [*FOUR_PROCESSES, "cluster.devices=4"]
TWO_NODES = [*FOUR_PROCESSES, "+cluster.nodes=2", "+cluster.devices_per_node=2", "cluster.devices=4"]
SFT = ["+alignment=[{type: sft, name: sft, data: data/tiny/alignment/sft.jsonl, chat_template: chatml, "
       "lr: 1e-3, epochs: 1, batch_size: 8}]"]
"""One alignment stage after pretraining: SFT over the same 4 processes (FSDP2 over every rank,
each rank 2 of the batch's 8 examples), one epoch of the tiny SFT set."""


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One out directory for the module: later launches skip the data and tokenize stages."""
    return tmp_path_factory.mktemp("multinode")


@pytest.fixture(scope="module")
def two_node_loss() -> dict:
    """The uninterrupted 2-node run's _SUCCESS.json, filled by the first test."""
    return {}


def _launch(out: Path, overrides: list[str], *options: str) -> tuple[subprocess.CompletedProcess, Path]:
    arguments = [item for override in overrides for item in ("--set", override)]
    result = specc("launch", str(TINY), "--executor", "slurm", "--out", str(out), *options, *arguments)
    bundle = Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))
    return result, bundle


def _pretrain(bundle: Path) -> dict:
    return next(entry for entry in launch_record(bundle)["stages"] if entry["stage"] == "pretrain")


def test_two_nodes_train_with_the_loss_of_one(slurm_cluster, out, two_node_loss):
    single, single_bundle = _launch(out, [*ONE_NODE, *SFT])
    assert single.returncode == 0, f"{single.stdout}\n{single.stderr[-4000:]}"
    reference = success(single_bundle, "pretrain")
    # same run directory: data and tokenize are skipped, pretrain (another config) runs again
    double, bundle = _launch(out, [*TWO_NODES, *SFT])
    assert double.returncode == 0, f"{double.stdout}\n{double.stderr[-4000:]}"
    assert "01-data: skipped" in double.stdout and "02-tokenize: skipped" in double.stdout
    two_node_loss.update(success(bundle, "pretrain"))

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

    # the alignment stage spans the two nodes the same way, with the loss of one node
    sft_sbatch = (bundle / "stages" / "04-sft" / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sft_sbatch and "#SBATCH --ntasks-per-node=1" in sft_sbatch
    sft_entry = next(e for e in launch_record(bundle)["stages"] if e["stage"] == "sft")
    sft_nodes = slurm_job_field(sft_entry["job_id"], "NodeList")
    assert len(subprocess.run(["scontrol", "show", "hostnames", sft_nodes], capture_output=True,
                              text=True).stdout.split()) == 2, f"sft ran on {sft_nodes}"
    aligned, aligned_reference = success(bundle, "sft"), success(single_bundle, "sft")
    assert aligned["steps"] == aligned_reference["steps"] > 0
    assert aligned["final_loss"] == aligned_reference["final_loss"], (aligned, aligned_reference)
    single_sft = next(e for e in launch_record(single_bundle)["stages"] if e["stage"] == "sft")
    print(f"sft wall time: 1 node x 4 processes {single_sft['seconds']} s, 2 nodes x 2 processes "
          f"{sft_entry['seconds']} s; final loss {aligned['final_loss']}")


def _slurmd_pidfile(node: str) -> Path:
    """Where scripts/slurm-local.sh keeps a node's slurmd pid (a private cluster: under SLURM_LOCAL_DIR)."""
    private = os.environ.get("SLURM_LOCAL_DIR")
    return (Path(private).resolve() / "run" if private else Path("/run")) / f"slurmd-{node}.pid"


def _job_processes_on(node: str, job_id: str) -> set[int]:
    """Processes of job `job_id` running as node `node` (by their Slurm environment), with the
    slurmstepd each hangs from: what dies with a node."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURMD_NODENAME={node}".encode()}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                found.add(int(entry.name))
        except OSError:
            continue
    for pid in list(found):
        parent = pid
        while parent > 1:
            try:
                parent = int((Path("/proc") / str(parent) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (Path("/proc") / str(parent) / "comm").read_text().strip() == "slurmstepd":
                    found.add(parent)
                    break
            except (OSError, ValueError, IndexError):
                break
    return found


def test_a_node_lost_mid_run_requeues_onto_the_spare_and_resumes(slurm_cluster, out, two_node_loss):
    assert two_node_loss, "the uninterrupted 2-node run did not finish"
    reference = dict(two_node_loss)
    # keep_checkpoints: a config of its own (else the finished run is skipped), the same training
    result, bundle = _launch(out, [*TWO_NODES, "+schedule.keep_checkpoints=2"], "--no-wait")
    assert result.returncode == 0, result.stderr[-4000:]
    job_id = _pretrain(bundle)["job_id"]
    training = run_dir(bundle) / "pretrain"

    def checkpointed() -> bool:
        return (last_step(training / "metrics.jsonl") or 0) >= 10

    wait_until(checkpointed, 300, "two checkpoints of the 2-node run")
    nodes = subprocess.run(["scontrol", "show", "hostnames", slurm_job_field(job_id, "NodeList")],
                           capture_output=True, text=True).stdout.split()
    victim = nodes[1]
    try:
        os.kill(int(_slurmd_pidfile(victim).read_text().strip()), signal.SIGKILL)
        for pid in _job_processes_on(victim, job_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed_at = time.monotonic()
        wait_until(lambda: int(slurm_job_field(job_id, "Restarts") or 0) >= 1, 180, "Slurm to requeue the job")
        requeued_s = time.monotonic() - killed_at
        wait_until(lambda: (training / "_SUCCESS.json").exists(), 400, "the requeued run to finish")
        resumed = success(bundle, "pretrain")
        ran_on = slurm_job_field(job_id, "NodeList")
    finally:  # bring the killed node back for the tests after this one
        subprocess.run(["bash", str(SLURM_SCRIPT), "start"], capture_output=True, timeout=300)
    hosts = subprocess.run(["scontrol", "show", "hostnames", ran_on], capture_output=True, text=True).stdout.split()
    assert victim not in hosts and len(hosts) == 2, f"requeued run placed on {ran_on}"
    assert resumed["final_loss"] == reference["final_loss"] and resumed["steps"] == reference["steps"]
    folder = Path(launch_record(bundle)["folder"]) / "03-pretrain"
    logs = "".join(p.read_text() for p in folder.glob("*_log.out"))
    # one log per task, read in any order (glob order): sorted, the first run starts at 0
    starts = sorted(int(m) for m in re.findall(r"steps (\d+)->20", logs))
    # killed after step 10 was logged: the checkpoint of step 5 (or 10, if it was committed) is there
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 5, f"no resume from a checkpoint: {starts}"
    errors = "".join(p.read_text() for p in folder.glob("*_log.err"))
    assert "StageFailed" not in errors
    detected = "went down; requeueing" in errors
    print(f"\nnode {victim} killed: requeued after {requeued_s:.0f} s onto {ran_on}, resumed at step {starts[1]} "
          f"({'the surviving task saw the node down' if detected else 'Slurm requeued it first'})")
