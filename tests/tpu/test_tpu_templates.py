"""TPU launch scripts (templates/tpu/, falling back to templates/default/): rendered by the real
emitter for the TPU example spec, every script passes `bash -n`, training starts one process
per host with PJRT_DEVICE=TPU, and Slurm-managed TPU hosts get one task per host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SPECS = ROOT / "specs"
TPU_SPEC = SPECS / "llama2-7b-tpu-v5p.yaml"


@pytest.fixture(scope="module")
def bundle():
    from specc.diagnostics.check import check_file
    from specc.emit.bundle import all_files, build_bundle
    from specc.plan import build_plan, plan_json

    result = check_file(TPU_SPEC, [])
    assert result.valid, "\n".join(d.to_text() for d in result.diagnostics)
    plan = json.loads(plan_json(build_plan(result.spec)))
    return all_files(build_bundle(result.spec, plan, str(SPECS), target="tpu"))


def training(files: dict[str, str], name: str) -> str:
    """The training stage's file `name` (the stage is `pretrain_tpu` on TPU targets, `pretrain` before)."""
    return next(text for path, text in files.items() if "pretrain" in path and path.endswith("/" + name))


def scripts(files: dict[str, str]) -> dict[str, str]:
    return {path: text for path, text in files.items() if path.endswith((".sh", ".sbatch"))}


def test_tpu_every_script_passes_bash_n(bundle, tmp_path):
    found = scripts(bundle)
    assert "submit.sh" in found and any("pretrain" in path and path.endswith("/run.sh") for path in found)
    for path, text in found.items():
        target = tmp_path / path.replace("/", "_")
        target.write_text(text)
        result = subprocess.run(["bash", "-n", str(target)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_tpu_training_runs_one_process_per_host_on_the_tpu(bundle):
    script = training(bundle, "run.sh")
    assert "export PJRT_DEVICE=TPU" in script
    assert "torch.distributed.run" not in script  # SPMD: one process drives every chip of a host
    assert 'export TPU_WORKER_ID="$SLURM_NODEID"' in script
    assert "exec \"$python\" -m specc.runtime stages/" in script
    others = [text for path, text in bundle.items() if path.endswith("run.sh") and "pretrain" not in path]
    assert all("PJRT_DEVICE" not in text for text in others)


def test_tpu_slurm_jobs_run_one_task_per_host(bundle):
    sbatch = training(bundle, "job.sbatch")
    assert "#SBATCH --nodes=32" in sbatch and "#SBATCH --ntasks-per-node=1" in sbatch
    assert "srun --ntasks-per-node=1 bash" in sbatch
    assert "--gpus-per-node" not in sbatch


def test_tpu_submit_launches_on_every_tpu_vm_worker_or_through_slurm(bundle):
    submit = bundle["submit.sh"]
    assert "gcloud compute tpus tpu-vm ssh" in submit
    workers = [line.strip() for line in submit.splitlines() if line.strip().startswith("--worker=")]
    assert workers == ["--worker=0 \\", "--worker=0 \\", "--worker=all \\"]  # data, tokenize on host 0; training on all
    assert "sbatch --parsable" in submit
