"""Sharded dedup through the real local Slurm: each phase a job array (`sbatch --array`), chained
with afterok, keeps exactly the documents the local loop over task ids keeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from launch_helpers import ROOT
from launch_helpers import slurm_cluster  # noqa: F401  (the session fixture, requested by name below)

from specc.runtime.data import sharded_dedup as sd
from specc.runtime.data.documents import read_documents, write_documents
from specc.runtime.data.synthetic import generate
from specc.spec.data import MinHashSpec, SyntheticSource

pytestmark = pytest.mark.slow  # a real Slurm cluster

TASKS = 2


def kept_ids(workdir: Path) -> set[str]:
    return {d.id for path in sorted((workdir / "kept").glob("*.jsonl.gz")) for d in read_documents(path)}


def submit(phase: str, workdir: Path, tasks: int, after: str | None, logs: Path) -> str:
    command = ["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--job-name=dedup-{phase}",
               f"--output={logs}/{phase}-%a.out", "--export=ALL", "--time=5", "--kill-on-invalid-dep=yes"]
    if after:
        command.append(f"--dependency=afterok:{after}")
    wrap = f"{sys.executable} -m specc.runtime.data.sharded_dedup {phase} {workdir}"
    submitted = subprocess.run([*command, "--wrap", wrap], capture_output=True, text=True, check=True)
    return submitted.stdout.strip().split(";")[0]


def test_sharded_dedup_phases_run_as_slurm_job_arrays(slurm_cluster, tmp_path):
    source = SyntheticSource(type="synthetic", name="prose", num_documents=600, seed=5, duplicate_fraction=0.3,
                             junk_fraction=0.0)
    documents = [generated.document for generated in generate(source)]
    parts = []
    for index in range(0, len(documents), 150):
        path = tmp_path / "in" / f"{index // 150:05d}.jsonl.gz"
        write_documents(path, documents[index:index + 150])
        parts.append({"documents": str(path)})
    spec = MinHashSpec(threshold=0.8)
    local = sd.prepare(tmp_path / "local", parts, TASKS, True, spec)
    sd.run_local(local.workdir)
    job = sd.prepare(tmp_path / "slurm", parts, TASKS, True, spec)
    logs = tmp_path / "logs"
    logs.mkdir()
    previous = None
    for phase in sd.PHASES:
        previous = submit(phase, job.workdir, sd.phase_tasks(job, phase), previous, logs)
    # a job that waits for the last array: sbatch --wait returns when it has run
    waited = subprocess.run(["sbatch", "--wait", f"--dependency=afterok:{previous}", "--time=1", "--kill-on-invalid-dep=yes",
                             f"--output={logs}/wait.out", "--wrap", "true"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    output = "\n".join(f"{p.name}: {p.read_text()}" for p in sorted(logs.glob("*.out")))
    assert waited.returncode == 0, f"{waited.stderr}\n{output}"
    ran = sorted(p.name for p in logs.glob("*.out"))
    assert {"bands-1.out", "buckets-1.out", "clusters-0.out", "filter-1.out"} <= set(ran), ran
    assert kept_ids(job.workdir) == kept_ids(local.workdir)
    assert len(kept_ids(job.workdir)) < len(documents)
