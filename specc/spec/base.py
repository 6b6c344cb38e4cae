"""The base class of every spec model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """Strict by default: unknown keys are errors (they are almost always typos), field
    docstrings become the published JSON Schema's descriptions, models are frozen
    so that a validated spec cannot drift between `plan` and `launch`, and no float field
    accepts `inf` or `nan` (YAML's `.inf`, `--set lr=inf`): a non-finite learning rate or
    time limit is never what was meant, and it would reach the runtime as one."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )
