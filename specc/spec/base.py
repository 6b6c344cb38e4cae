"""The base class of every spec model."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


def _admits(annotation: object, wanted: tuple[type, ...]) -> bool:
    """Whether an annotation (through Annotated, unions, Optional, Literal) accepts one of `wanted`."""
    if annotation in wanted or annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits(typing.get_args(annotation)[0], wanted)
    if origin in (typing.Union, types.UnionType):
        return any(_admits(arg, wanted) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(type(arg) in wanted for arg in typing.get_args(annotation))
    return False


def _parsed_by_units(metadata: list) -> bool:
    """Count/Length/Bytes/Number fields refuse booleans themselves, located at the key."""
    return any(getattr(getattr(item, "func", None), "__module__", "") == "specc.spec.units" for item in metadata)


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

    @model_validator(mode="before")
    @classmethod
    def _no_bool_as_number(cls, data: object) -> object:
        """`num_layers: yes` is YAML 1.1's true, which pydantic's lax int/float takes as 1: a boolean
        is never a number, so it is refused for every field whose type does not accept bool."""
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None and not _parsed_by_units(field.metadata) \
                    and _admits(field.annotation, (int, float)) and not _admits(field.annotation, (bool,)):
                raise ValueError(f"`{name}` expects a number, got {str(value).lower()} "
                                 "(YAML reads yes/no/on/off/true/false as booleans)")
        return data
