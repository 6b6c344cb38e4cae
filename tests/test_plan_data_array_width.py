"""P230: a data-stage Slurm job array wider than Slurm's default MaxArraySize (1001) is flagged at
plan time (sbatch would refuse it at submission, hours into a pipeline)."""

from __future__ import annotations

from specc.diagnostics.check import check_file
from specc.plan.plan import build_plan

SLURM = ["cluster.executor=slurm", "+cluster.slurm={partition: gpu, time: '1:00:00'}"]


def _codes(overrides: list[str]) -> list[str]:
    result = check_file("specs/tiny.yaml", overrides)
    assert result.spec is not None, [str(d) for d in result.diagnostics]
    return [w.code for w in build_plan(result.spec).warnings]


def test_a_filter_array_past_max_array_size_is_flagged():
    assert "P230" in _codes([*SLURM, "+cluster.slurm.data_array_tasks=1500"])


def test_arrays_within_the_limit_and_local_runs_are_not():
    assert "P230" not in _codes([*SLURM, "+cluster.slurm.data_array_tasks=4"])
    assert "P230" not in _codes([])


def test_a_bucket_array_past_max_array_size_is_flagged():
    """10 billion documents need ~4,400 bucket tasks of < 2 GiB (docs/formulas.md section 10)."""
    result = check_file("specs/tiny.yaml", [*SLURM, "+cluster.slurm.data_array_tasks=8",
                                            "corpus.sources=[{type: synthetic, name: prose, num_documents: 10000000000}]"])
    assert result.spec is not None, [str(d) for d in result.diagnostics]
    plan = build_plan(result.spec)
    assert plan.data["sharded_dedup"]["bucket_tasks"] > 1001
    assert [w.message for w in plan.warnings if w.code == "P230"][0].startswith("the sharded dedup's bucket array")
