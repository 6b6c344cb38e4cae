"""The base class of every spec model."""

from __future__ import annotations

import ast
import inspect
import sys
import types
import typing
from functools import cache
from typing import Any, ClassVar

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
    time limit is never what was meant, and it would reach the runtime as one.

    Built lazily, for start-up time (`specc validate` runs in a fresh process each time):
    `defer_build` leaves pydantic's validators unbuilt until a model first validates (the
    `Spec` root then builds the sections it holds in one pass), and the field docstrings are
    read only when a JSON Schema is asked for (`document_fields`), not at import: pydantic's
    `use_attribute_docstrings` re-reads and parses each class's source as the class is created,
    about 0.1 s for the spec's 38 models, and validation never reads a description."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
        defer_build=True,
    )

    _models: ClassVar[list[type[SpecModel]]] = []
    """Every spec model, in the order the classes were created (a model after those it nests)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        SpecModel._models.append(cls)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON Schema, with each field's docstring as its description."""
        document_fields()
        return super().model_json_schema(*args, **kwargs)

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


_documented: set[type[SpecModel]] = set()


def document_fields() -> None:
    """Give each field without a `description` the docstring written under it, as pydantic's
    `use_attribute_docstrings` would (an inherited field takes the docstring of the class that
    declares it), then rebuild the models already built, nested models first, so that every
    schema (a parent's holds a copy of each nested model's) carries the descriptions."""
    new = [model for model in SpecModel._models if model not in _documented]
    if not new:
        return
    for model in new:
        _documented.add(model)
        for name, info in model.model_fields.items():
            docstring = _field_docstrings(_declaring_class(model, name)).get(name)
            if info.description is None and docstring is not None:
                info.description = docstring
    for model in SpecModel._models:
        if model.__pydantic_complete__:
            model.model_rebuild(force=True)


def _declaring_class(model: type, name: str) -> type:
    return next(k for k in model.__mro__ if name in k.__dict__.get("__annotations__", {}))


@cache
def _field_docstrings(cls: type) -> dict[str, str]:
    """{field: docstring} of the string statements that directly follow an annotated field in
    the class body (pydantic's rule, read from the source with `ast`)."""
    for node in ast.walk(_module_tree(cls.__module__)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            docs = {}
            for before, statement in zip(node.body, node.body[1:]):
                if (isinstance(before, ast.AnnAssign) and isinstance(before.target, ast.Name)
                        and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
                        and isinstance(statement.value.value, str)):
                    docs[before.target.id] = inspect.cleandoc(statement.value.value)
            return docs
    return {}


@cache
def _module_tree(module: str) -> ast.Module:
    return ast.parse(inspect.getsource(sys.modules[module]))
