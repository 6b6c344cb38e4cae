"""Which precisions validate where: R118 reads the capability table the runtimes enforce, and
R190 warns about an fp8 recipe nothing reads."""

from __future__ import annotations

import pytest

from specc.catalog import load_catalog
from specc.cli import main
from specc.spec.capabilities import capabilities_for, fp8_linear_converts

TINY = "specs/tiny.yaml"


def _validate(*overrides: str) -> int:
    args = ["validate", "--strict", TINY]
    for override in overrides:
        args += ["--set", override]
    return main(args)


@pytest.mark.parametrize("accelerator, precision, valid", [
    ("h100-sxm", "fp8", True), ("mi300x", "fp8", True), ("a100-80gb", "fp8", False), ("v100-32gb", "fp8", False),
    ("cpu", "fp8", False), ("tpu-v5p", "fp8", False), ("tpu-v5p", "fp16", False), ("tpu-v5p", "bf16", True),
    ("v100-32gb", "fp16", True), ("v100-32gb", "bf16", False), ("cpu", "fp16", True), ("a100-80gb", "fp16", True),
])
def test_precision_validates_where_the_runtime_trains_in_it(accelerator, precision, valid, capsys):
    # tiny's alignment stages do not run on TPUs (R267): left out there, the precision is what is tested
    without_alignment = ["~alignment"] if accelerator.startswith("tpu") else []
    code = _validate(f"parallel.precision={precision}", f"cluster.accelerator={accelerator}", *without_alignment)
    output = capsys.readouterr().out
    assert (code == 0) == valid, output
    assert ("error[R118]" in output) == (not valid)
    assert valid == (precision in capabilities_for(load_catalog()[accelerator]).precisions)


def test_fp8_recipe_without_fp8_warns(capsys):
    assert _validate("+parallel.fp8_recipe=rowwise") == 1
    assert "warning[R190] parallel.fp8_recipe: fp8_recipe: rowwise has no effect with precision: fp32" in capsys.readouterr().out
    assert _validate("+parallel.fp8_recipe=rowwise", "parallel.precision=fp8", "cluster.accelerator=h100-sxm") == 0


def test_fp8_conversion_rule_needs_multiples_of_16_per_tensor_parallel_rank():
    assert fp8_linear_converts(4096, 1024)
    assert not fp8_linear_converts(4096, 1000)       # 1000 % 16 = 8
    assert fp8_linear_converts(4096, 1024, tp=8)     # 128 per rank
    assert not fp8_linear_converts(4096, 1024, tp=128)  # 8 per rank
