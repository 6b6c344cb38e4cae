"""Where each key lives in the spec models: for "did you mean" and "belongs under" hints.

Walks the pydantic model classes (not the JSON Schema) so the hints always match the
models that validate.
"""

from __future__ import annotations

import difflib
import types
import typing
from functools import cache

from pydantic import BaseModel

from specc.spec.root import Spec


def _members(annotation) -> list:
    """The alternatives of a type: unwraps Annotated, Optional and unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = []
        for arg in typing.get_args(annotation):
            members.extend(_members(arg))
        return members
    return [annotation]


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(annotation, segment, data) -> tuple[object | None, object]:
    """Follow one path segment from a type; returns (the child type, the child data)."""
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if _is_model(member) and isinstance(segment, str) and segment in member.model_fields:
            child = data.get(segment) if isinstance(data, dict) else None
            return member.model_fields[segment].annotation, child
        if origin is list and isinstance(segment, int):
            child = data[segment] if isinstance(data, list) and segment < len(data) else None
            return typing.get_args(member)[0], child
        if origin is dict:
            child = data.get(segment) if isinstance(data, dict) else None
            return typing.get_args(member)[1], child
    return None, None


def annotation_at(path: tuple, data: object) -> tuple[object | None, object]:
    """The type that validates the value at `path` of `data`, and that value."""
    annotation: object = Spec
    node = data
    for segment in path:
        annotation, node = _step(annotation, segment, node)
        if annotation is None:
            return None, None
    return annotation, node


def model_at(path: tuple, data: object) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path` of `data`, if any."""
    annotation, node = annotation_at(path, data)
    return choose_model(annotation, node) if annotation is not None else None


def tag_choices(path: tuple, data: object) -> list[str]:
    """The `type:` values accepted at `path` (a discriminated union of models)."""
    annotation, _ = annotation_at(path, data)
    choices = []
    for member in _members(annotation) if annotation is not None else []:
        tag_field = member.model_fields.get("type") if _is_model(member) else None
        if tag_field is not None:
            choices.extend(str(a) for a in typing.get_args(tag_field.annotation))
    return choices


def choose_model(annotation, node) -> type[BaseModel] | None:
    """Pick the model of a (possibly discriminated) union that matches `node`."""
    models = [m for m in _members(annotation) if _is_model(m)]
    if len(models) > 1 and isinstance(node, dict):
        for model in models:
            tag_field = model.model_fields.get("type")
            if tag_field is not None and tag_field.default is not None and tag_field.default == node.get("type"):
                return model
            literal = typing.get_args(tag_field.annotation) if tag_field else ()
            if node.get("type") in literal:
                return model
    return models[0] if models else None


@cache
def key_locations() -> dict[str, tuple[str, ...]]:
    """Field name -> the dotted sections where it is a valid key (`seq_len` -> `schedule`, ...)."""
    found: dict[str, set[str]] = {}

    def visit(model: type[BaseModel], prefix: str, seen: frozenset) -> None:
        if model in seen:
            return
        for name, info in model.model_fields.items():
            found.setdefault(name, set()).add(prefix or "<top level>")
            for member in _members(info.annotation):
                for candidate in [member, *typing.get_args(member)]:
                    for inner in _members(candidate):
                        if _is_model(inner):
                            child = f"{prefix}.{name}" if prefix else name
                            visit(inner, child, seen | {model})

    visit(Spec, "", frozenset())
    return {name: tuple(sorted(places)) for name, places in found.items()}


def suggest(word: str, choices: list[str]) -> str | None:
    """The closest choice to a misspelt word, or None."""
    matches = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return matches[0] if matches else None
