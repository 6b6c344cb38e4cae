"""The base class of every spec model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """Strict by default: unknown keys are errors (they are almost always typos), field
    docstrings become the published JSON Schema's descriptions, and models are frozen
    so that a validated spec cannot drift between `plan` and `launch`."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
        validate_default=True,
    )
