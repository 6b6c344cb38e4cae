"""pydantic validation errors -> located diagnostics with codes and hints.

pydantic reports error locations in model terms (with union-branch names such as
`ParallelSpec` or `literal['auto']`); we map each back to the path in the user's data
and from there to `file:line:col`, drop errors from union branches the value plainly
was not meant for, and word the message in the spec's terms.

Codes:
  S001 unknown key              S005 wrong type
  S002 missing required key     S006 value out of range
  S003 unknown or missing `type` (filters, alignment stages, sources)
  S004 value not among choices  S007 identifier pattern
  S008 value cannot be read (units)   S009 other
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from specc.diagnostics.diagnostic import Diagnostic, format_path
from specc.diagnostics.schema_index import key_locations, model_at, suggest, tag_choices
from specc.spec.loader import SourceMap

_PATTERN_HELP = {
    "^[a-z0-9][a-z0-9._-]{0,62}$": "use lowercase letters, digits, `.`, `_` and `-` (at most 63 characters, starting with a letter or digit)",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$": "use letters, digits, `_`, `.` and `-` (Slurm names reach `#SBATCH` lines)",
    r"^[A-Za-z0-9_.\-&|()\[\]*,:]{1,256}$": "use feature names joined by `&`, `|`, `[]`, `()`, `*`, `,` or `:`",
    r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$": "use a plain e-mail address such as `me@example.org`",
    r"^[0-9]+[KMGT]?$": "use Slurm's memory form: a number with an optional K, M, G or T suffix",
    r"^[A-Za-z0-9][A-Za-z0-9._:/#@+-]{0,255}$": "an image reference such as `nvcr.io#nvidia/pytorch:24.12-py3` (no spaces or shell characters)",
    r"^[A-Za-z0-9_./-]+(:[A-Za-z0-9_./-]+)?(:(ro|rw))?$": "a mount `src[:dst[:ro]]` of plain paths",
}

_EXPECTATIONS = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "none_required": "null",
}
_UNION_KINDS = set(_EXPECTATIONS) | {"literal_error"}


@dataclass
class _Located:
    error: dict
    path: tuple
    through_branch: bool
    """The loc passed through a union member (e.g. `ParallelSpec`, `literal['auto']`)."""


def _locate(error: dict, data: object) -> _Located:
    """Map a pydantic loc onto the user's data path, skipping union-branch segments."""
    path: list = []
    node = data
    through_branch = False
    for segment in error["loc"]:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
            path.append(segment)
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            node = node[segment]
            path.append(segment)
        elif error["type"] in ("extra_forbidden", "missing") and segment == error["loc"][-1]:
            path.append(segment)
        else:
            through_branch = True
    return _Located(error, tuple(path), through_branch)


def _drop_other_branches(located: list[_Located]) -> list[_Located]:
    """Keep errors from the union branch the value was meant for.

    A union error at path P (`parallel` is not 'auto') is noise when another branch
    reports errors deeper under P (`parallel.tp` is not an integer).
    """
    deep_paths = [item.path for item in located]
    kept = []
    for item in located:
        deeper = any(len(other) > len(item.path) and other[: len(item.path)] == item.path for other in deep_paths)
        if item.through_branch and deeper and item.error["type"] not in ("extra_forbidden", "missing"):
            continue
        kept.append(item)
    return kept


def diagnostics_from_validation(error: ValidationError, data: object, source_map: SourceMap) -> list[Diagnostic]:
    """Every pydantic error as a located diagnostic, union alternatives merged."""
    located = _drop_other_branches([_locate(e, data) for e in error.errors()])
    by_path: dict[tuple, list[_Located]] = {}
    for item in located:
        key = item.path if item.error["type"] not in ("extra_forbidden", "missing") else item.path + ("#",)
        by_path.setdefault(key, []).append(item)
    diagnostics = []
    for group in by_path.values():
        branch_errors = [g for g in group if g.through_branch and g.error["type"] in _UNION_KINDS]
        if len(branch_errors) > 1:
            diagnostics.append(_merged_union(branch_errors, data, source_map))
            group = [g for g in group if g not in branch_errors]
        diagnostics.extend(_one(item, data, source_map) for item in group)
    return diagnostics


def _value_at(data: object, path: tuple) -> object:
    node = data
    for part in path:
        node = node[part]
    return node


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _merged_union(items: list[_Located], data: object, source_map: SourceMap) -> Diagnostic:
    path = items[0].path
    value = _value_at(data, path)
    wanted = []
    for item in items:
        if item.error["type"] == "literal_error":
            phrase = item.error["ctx"]["expected"].replace(" or ", ", ")
        else:
            phrase = _EXPECTATIONS[item.error["type"]]
        if phrase not in wanted:
            wanted.append(phrase)
    return Diagnostic("error", "S005", f"expected {' or '.join(wanted)}, got {_shown(value)} ({_kind(value)})",
                      source_map.value_at(path), format_path(path))


def _one(item: _Located, data: object, source_map: SourceMap) -> Diagnostic:
    error, path = item.error, item.path
    kind = error["type"]
    shown_path = format_path(path)
    if kind == "extra_forbidden":
        return _unknown_key(path, data, source_map)
    if kind == "missing":
        parent = format_path(path[:-1]) or "the top level"
        return Diagnostic("error", "S002", f"missing required key `{path[-1]}` in {_section(parent)}",
                          source_map.key_at(path[:-1]) if path[:-1] else source_map.value_at(()),
                          shown_path, hint=_missing_hint(path))
    value = _value_at(data, path)
    where = source_map.value_at(path)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _bad_tag(error, path, value, tag_choices(path, data), source_map)
    if kind in ("literal_error", "enum"):
        choices = [c.strip().strip("'") for c in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        close = suggest(str(value), choices)
        hint = f"did you mean `{close}`?" if close else None
        return Diagnostic("error", "S004", f"{_shown(value)} is not one of: {', '.join(choices)}",
                          where, shown_path, hint=hint)
    if kind in _EXPECTATIONS:
        return Diagnostic("error", "S005", f"expected {_EXPECTATIONS[kind]}, got {_shown(value)} ({_kind(value)})",
                          where, shown_path)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of",
                "too_short", "too_long", "string_too_short", "string_too_long"):
        return Diagnostic("error", "S006", _range_message(kind, error, value), where, shown_path)
    if kind == "finite_number":
        return Diagnostic("error", "S006", f"must be a finite number, got {_shown(value)}", where, shown_path,
                          hint="inf and nan are not accepted; write the number meant, e.g. `3e-4`")
    if kind == "string_pattern_mismatch":
        pattern = error["ctx"]["pattern"]
        return Diagnostic("error", "S007", f"{_shown(value)} is not allowed here", where, shown_path,
                          hint=_PATTERN_HELP.get(pattern, f"must match `{pattern}`"))
    if kind == "value_error":
        return Diagnostic("error", "S008", str(error["ctx"]["error"]), where, shown_path)
    return Diagnostic("error", "S009", error["msg"], where, shown_path)


def _section(dotted: str) -> str:
    return dotted if dotted == "the top level" else f"`{dotted}`"


def _missing_hint(path: tuple) -> str | None:
    if path == ("name",):
        return "every spec needs `name: <run-name>`"
    return None


def _range_message(kind: str, error: dict, value: object) -> str:
    ctx = error.get("ctx", {})
    phrases = {
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than": f"must be less than {ctx.get('lt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "multiple_of": f"must be a multiple of {ctx.get('multiple_of')}",
        "too_short": f"needs at least {ctx.get('min_length')} item(s)",
        "too_long": f"takes at most {ctx.get('max_length')} item(s)",
        "string_too_short": f"needs at least {ctx.get('min_length')} character(s)",
        "string_too_long": f"takes at most {ctx.get('max_length')} character(s)",
    }
    return f"{phrases[kind]}, got {_shown(value)}"


def _unknown_key(path: tuple, data: object, source_map: SourceMap) -> Diagnostic:
    key = path[-1]
    parent = path[:-1]
    model = model_at(parent, data)
    valid = sorted(model.model_fields) if model else []
    where = source_map.key_at(path)
    shown_parent = format_path(parent) or "the top level"
    message = f"unknown key `{key}` in {_section(shown_parent)}"
    close = suggest(str(key), valid)
    elsewhere = [p for p in key_locations().get(str(key), ()) if p != (format_path(_names_only(parent)) or "<top level>")]
    if elsewhere:
        hint = f"this key belongs under `{elsewhere[0]}:`" if elsewhere[0] != "<top level>" else "this key belongs at the top level"
    elif close:
        hint = f"did you mean `{close}`?"
    else:
        hint = f"valid keys here: {', '.join(valid)}" if valid else None
    return Diagnostic("error", "S001", message, where, format_path(path), hint=hint)


def _names_only(path: tuple) -> tuple:
    return tuple(p for p in path if isinstance(p, str))


def _bad_tag(error: dict, path: tuple, value: object, expected: list[str], source_map: SourceMap) -> Diagnostic:
    if error["type"] == "union_tag_not_found" or not isinstance(value, dict):
        return Diagnostic("error", "S003", "this item needs a `type`", source_map.value_at(path),
                          format_path(path), hint=f"one of: {', '.join(expected)}")
    tag = value.get("type")
    close = suggest(str(tag), expected)
    hint = f"did you mean `{close}`?" if close else f"one of: {', '.join(expected)}"
    return Diagnostic("error", "S003", f"unknown type {_shown(tag)}", source_map.value_at(path + ("type",)),
                      format_path(path + ("type",)), hint=hint)
