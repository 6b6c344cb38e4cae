"""Rules about the compute precision's own settings (R190-R194).

Whether the accelerator trains in the precision at all is R118 (`parallel_rules.precision_supported`).
"""

from __future__ import annotations

from collections.abc import Iterator

from specc.diagnostics.rules.base import Finding
from specc.spec.root import Spec


def fp8_recipe_needs_fp8(spec: Spec) -> Iterator[Finding]:
    """`fp8_recipe` chooses torchao's float8 scaling; without `precision: fp8` nothing reads it.

    passes: `precision: fp8, fp8_recipe: rowwise`      fails (warning): `precision: bf16, fp8_recipe: rowwise`
    """
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    if parallel is not None and "fp8_recipe" in parallel.model_fields_set and parallel.precision != "fp8":
        yield Finding(("parallel", "fp8_recipe"),
                      f"fp8_recipe: {parallel.fp8_recipe} has no effect with precision: {parallel.precision}",
                      "set precision: fp8, or remove fp8_recipe", "warning")
