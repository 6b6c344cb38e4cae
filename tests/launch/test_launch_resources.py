"""Per-stage resources (`cluster.slurm.stages`, `specc.emit.resources`): the bundle's job.sbatch
and the submitit parameters the launcher reads back from it follow the spec, stage by stage."""

from __future__ import annotations

from launch_helpers import SHORT_RUN, TINY, emit

from specc.launch.launcher import read_stages, slurm_parameters

SLURM = ["cluster.executor=slurm", "+cluster.slurm.partition=gpu", "+cluster.slurm.cpu_partition=cpu",
         "+dedup.num_workers=6"]


def _bundle(tmp_path, overrides=()):
    bundle = emit(TINY, tmp_path / "out", [*SHORT_RUN, *SLURM, *overrides])
    return {stage.name: stage for stage in read_stages(bundle)}


def test_cpu_stages_go_to_the_cpu_partition_with_a_cpu_per_worker(tmp_path):
    stages = _bundle(tmp_path)
    data, tokenize, pretrain = stages["data"].directives, stages["tokenize"].directives, stages["pretrain"].directives
    assert data["partition"] == "cpu" and data["cpus-per-task"] == "6" and "gpus-per-node" not in data
    assert tokenize["partition"] == "cpu" and "cpus-per-task" not in tokenize
    assert pretrain["partition"] == "gpu" and pretrain["time"] == "0-04:00:00"
    assert slurm_parameters(stages["data"], None)["cpus_per_task"] == 6


def test_declared_stage_resources_reach_sbatch_and_submitit(tmp_path):
    stages = _bundle(tmp_path, ["+cluster.slurm.stages.data.time=12h", "+cluster.slurm.stages.data.mem=64G",
                                "+cluster.slurm.stages.data.cpus_per_task=8",
                                "+cluster.slurm.stages.pretrain.time=2h", "+cluster.slurm.stages.pretrain.partition=big",
                                "+cluster.slurm.stages.pretrain.exclusive=false", "+cluster.slurm.stages.eval.mem=8G"])
    data, pretrain, evaluate = stages["data"].directives, stages["pretrain"].directives, stages["eval"].directives
    assert (data["time"], data["mem"], data["cpus-per-task"]) == ("0-12:00:00", "64G", "8")
    assert (pretrain["time"], pretrain["partition"]) == ("0-02:00:00", "big") and "exclusive" not in pretrain
    assert evaluate["mem"] == "8G" and evaluate["partition"] == "gpu"
    assert "mem" not in stages["tokenize"].directives
    parameters = slurm_parameters(stages["pretrain"], "41")
    assert parameters["time"] == 120 and parameters["partition"] == "big"
    assert parameters["additional_parameters"]["dependency"] == "afterok:41"
    assert slurm_parameters(stages["data"], None)["time"] == 720


def test_training_time_limit_sets_the_checkpoint_findings():
    """The pretrain stage's own time limit is the one P202 and the failure budget use."""
    import json

    from specc.diagnostics.check import check_file
    from specc.plan import build_plan, plan_json

    overrides = [*SHORT_RUN, *SLURM, "+cluster.slurm.stages.pretrain.time=30min", "schedule.steps=100000"]
    result = check_file(TINY, overrides)
    assert result.valid
    plan = json.loads(plan_json(build_plan(result.spec)))
    usable = 30 * 60 - 90
    wall = plan["reliability"]["wall_days"] * 86400
    assert plan["reliability"]["time_limit_restarts"] >= int(wall / usable) - 1 > 0


def test_alignment_stages_request_the_planned_nodes_and_gpus(tmp_path):
    """Alignment runs on the distributed runtime: each alignment stage's job asks for every planned node
    and GPU (2 nodes x 4 H100s), and its run.sh starts torchrun with one process per GPU; eval and deploy
    stay on one GPU."""
    import json

    cluster = ["cluster.accelerator=h100-sxm", "+cluster.nodes=2", "~cluster.devices", "+cluster.devices_per_node=4",
               "parallel.precision=bf16", "parallel.dp=8", "parallel.micro_batch=2"]
    bundle = emit(TINY, tmp_path / "out", [*SLURM, *cluster])
    stages = {stage.name: stage for stage in read_stages(bundle)}
    for name in ("sft", "rm", "dpo", "ppo"):
        directives = stages[name].directives
        assert (directives["nodes"], directives["gpus-per-node"], directives["exclusive"]) == ("2", "4", True), name
        directory = next(bundle.glob(f"stages/*-{name}"))
        assert "--nnodes 2 --nproc-per-node 4" in (directory / "run.sh").read_text(), name
        params = json.loads((directory / "config.json").read_text())["params"]
        assert (params["devices"], params["precision"]) == (8, "bf16")
    assert (stages["eval"].directives["nodes"], stages["eval"].directives["gpus-per-node"]) == ("1", "1")
