"""Container images (pyxis/enroot) reach the Slurm options of every stage, quoted, and
through the same path the launcher hands to submitit."""

from __future__ import annotations

import subprocess

from launch_helpers import SPECS, emit
from specc.diagnostics.check import check_file
from specc.launch.launcher import BundleStage, slurm_parameters

IMAGE = "nvcr.io#nvidia/pytorch:24.12-py3"
CONTAINER = ["cluster.executor=slurm", f"+cluster.container={IMAGE}",
             "+cluster.container_mounts=[/data:/data:ro, /scratch]"]


def test_container_options_are_in_every_job_script(tmp_path):
    bundle = emit(SPECS / "tiny.yaml", tmp_path, CONTAINER)
    scripts = sorted((bundle / "stages").glob("*/job.sbatch"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert f"#SBATCH --container-image='{IMAGE}'" in text
        assert "#SBATCH --container-mounts=/data:/data:ro,/scratch" in text
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_container_options_reach_submitit_parameters():
    stage = BundleStage("03-pretrain", {"stage": "pretrain"},
                        {"container-image": IMAGE, "time": "0-00:10:00", "signal": "USR2@90", "nodes": "1"})
    parameters = slurm_parameters(stage, after="41")
    assert parameters["additional_parameters"] == {"container_image": IMAGE, "dependency": "afterok:41"}


def test_shell_characters_in_a_container_image_are_refused():
    result = check_file(SPECS / "tiny.yaml", [f"+cluster.container={IMAGE}; rm -rf /"])
    assert [d.code for d in result.errors] == ["S007"]
    assert "image reference" in result.errors[0].hint
