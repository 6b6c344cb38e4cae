"""Shared helpers of the launch tests: emitting bundles, reading runs, the real local Slurm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
TINY = SPECS / "tiny.yaml"
SLURM_SCRIPT = ROOT / "scripts" / "slurm-local.sh"
SPECC = [sys.executable, "-m", "specc.cli"]

SMALL_CORPUS = ["corpus.sources.0.max_files=100", "corpus.sources.1.num_documents=500",
                "tokenizer.sample_documents=500"]
SHORT_RUN = ["~alignment", "~deploy", "schedule.steps=20", "schedule.checkpoint_interval=5",
             "schedule.eval_interval=10", "schedule.eval_batches=2", "schedule.warmup_steps=5",
             "+schedule.log_interval=5"]
FAST_TRAINING = [*SMALL_CORPUS, *SHORT_RUN]
"""The tiny spec shrunk to data -> tokenize -> pretrain -> eval, a quarter of its corpus and a few seconds
of training; the tests' runs use these (alignment and deploy have their own tests)."""


def emit(spec_path: Path, out: Path, overrides: list[str] = (), spec_dir: str | None = None,
         force: bool = False) -> Path:
    """Validate, plan and emit a bundle in-process; returns its directory."""
    from specc.diagnostics.check import check_file
    from specc.emit.bundle import build_bundle, write_bundle
    from specc.plan import build_plan, plan_json

    result = check_file(spec_path, list(overrides))
    assert result.valid, "\n".join(d.to_text() for d in result.diagnostics)
    plan = json.loads(plan_json(build_plan(result.spec, overrides=list(overrides))))
    bundle = build_bundle(result.spec, plan, spec_dir or str(spec_path.resolve().parent))
    return write_bundle(bundle, out, force=force)[0]


def tiny_copy(directory: Path, text: str | None = None) -> Path:
    """tiny.yaml (or `text`) written into `directory`, beside a link to the data files its stages
    read (so that launch's pre-flight finds them, as it would next to the original)."""
    spec = directory / "tiny.yaml"
    spec.write_text(TINY.read_text() if text is None else text)
    if not (directory / "data").exists():
        (directory / "data").symlink_to(SPECS / "data")
    return spec


def specc(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) \
        -> subprocess.CompletedProcess:
    """Run the `specc` command line in a subprocess (as a user would)."""
    return subprocess.run([*SPECC, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def run_dir(bundle: Path) -> Path:
    config = json.loads(next((bundle / "stages").glob("*/config.json")).read_text())
    return (bundle / config["run_dir"]).resolve()


def success(bundle: Path, stage: str) -> dict | None:
    marker = run_dir(bundle) / stage / "_SUCCESS.json"
    return json.loads(marker.read_text()) if marker.exists() else None


def launch_record(bundle: Path) -> dict:
    return json.loads((bundle / "jobs" / "launch.json").read_text())


def states(bundle: Path) -> dict[str, str]:
    return {entry["stage"]: entry["state"] for entry in launch_record(bundle)["stages"]}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll `predicate` until it returns a true value; fail (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the real local Slurm ----------------------------------------------------------------


def _cluster_up() -> bool:
    return subprocess.run(["bash", str(SLURM_SCRIPT), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real Slurm cluster with accounting, three nodes on this machine, started (and installed)
    by scripts/slurm-local.sh. With SLURM_LOCAL_DIR set, a private cluster under that directory
    instead (no accounting; for machines whose system cluster others are using).

    Left running if it was already up; otherwise stopped after the session.
    """
    if os.geteuid() != 0:
        pytest.skip("the real-Slurm tests need root: scripts/slurm-local.sh installs and runs the daemons")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is unavailable to install it")
    private = os.environ.get("SLURM_LOCAL_DIR")
    if private:  # a private cluster beside the system one (scripts/slurm-local.sh): point the commands at it
        os.environ["SLURM_CONF"] = str(Path(private).resolve() / "etc" / "slurm.conf")
    was_up = _cluster_up()
    started = subprocess.run(["bash", str(SLURM_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, f"scripts/slurm-local.sh start failed:\n{started.stdout}\n{started.stderr}"
    yield
    if not was_up:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop"], capture_output=True, timeout=300)


def slurm_job_field(job_id: str, field: str) -> str | None:
    """One field of `scontrol show job` (e.g. `JobState`, `Restarts`), None once the job is forgotten."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    for word in shown.split():
        if word.startswith(f"{field}="):
            return word.split("=", 1)[1]
    return None
