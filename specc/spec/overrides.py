"""Hydra-style command-line overrides: `a.b=c` (change), `+a.b=c` (add), `++a.b=c`
(add or change), `~a.b` (delete). Values are parsed as YAML (`[1, 2]`, `true`, `4k`).

Each override is located as `<override #N>` so that a wrong one is reported like a
wrong line in the file. Integer segments index lists: `filters.0.max_chars=5000`.
"""

from __future__ import annotations

import re

import yaml

from specc.diagnostics.diagnostic import Diagnostic, Position, format_path
from specc.spec.loader import SourceMap, parse_value

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^[0-9]+$")


def _clip(text: str, limit: int = 60) -> str:
    """Shorten a hostile override for the message; the full text is on the command line."""
    return text if len(text) <= limit else text[:limit] + "..."


def _split_path(dotted: str) -> tuple | None:
    parts = dotted.split(".")
    if not all(_KEY.match(p) for p in parts):
        return None
    return tuple(int(p) if p.isdigit() else p for p in parts)


def apply_overrides(data: dict, source_map: SourceMap, overrides: list[str]) -> list[Diagnostic]:
    """Apply overrides in order, in place; return diagnostics for the ones that do not apply."""
    diagnostics = []
    for number, text in enumerate(overrides, start=1):
        where = Position(f"<override #{number}>")
        problem = _apply_one(data, source_map, text, where)
        if problem:
            diagnostics.append(problem)
    return diagnostics


def _apply_one(data: dict, source_map: SourceMap, text: str, where: Position) -> Diagnostic | None:
    match = re.fullmatch(r"(?P<op>\+\+|\+|~)?(?P<key>[^=]+?)(?:=(?P<value>.*))?", text.strip(), re.S)
    if not match or (match.group("op") != "~" and match.group("value") is None):
        return Diagnostic("error", "O001", f"cannot read override {text!r}", where,
                          hint="write `key.path=value`, `+key.path=value` (add), `~key.path` (delete)")
    op, dotted = match.group("op") or "", match.group("key").strip()
    path = _split_path(dotted)
    if path is None:
        return Diagnostic("error", "O001", f"invalid key path {dotted!r} in override {text!r}", where,
                          hint="key paths are dot-separated names or list indices, e.g. `model.num_layers`")
    if op == "~" and not _exists(data, path):
        return Diagnostic("error", "O004", f"cannot delete `{format_path(path)}`: it is not set", where,
                          format_path(path))
    parent, problem = _walk_to_parent(data, source_map, path, create=op in ("+", "++"), where=where)
    if problem:
        return problem
    last = path[-1]
    exists = _has(parent, last)
    shown = format_path(path)
    if op == "~":
        if not exists:
            return Diagnostic("error", "O004", f"cannot delete `{shown}`: it is not set", where, shown)
        del parent[last]
        return None
    if op == "" and not exists:
        return Diagnostic("error", "O002", f"`{shown}` is not set in the spec", where, shown,
                          hint=f"to add a key that is not in the file, write `+{dotted}=...`")
    if op == "+" and exists:
        return Diagnostic("error", "O003", f"`{shown}` is already set; `+` only adds new keys", where, shown,
                          hint=f"to change it write `{dotted}=...` (or `++{dotted}=...`)")
    if isinstance(parent, list) and not exists:
        return Diagnostic("error", "O005", f"list index {last} is out of range in `{shown}`", where, shown)
    value, problem = parse_value(match.group("value"), where.file) if match.group("value").strip() else ("", None)
    if problem:
        return Diagnostic(problem.severity, problem.code, f"{problem.message} in override {_clip(text)!r}", where, shown,
                          hint=problem.hint)
    parent[last] = value
    source_map.replace_subtree(path, where, value)
    return None


def _has(container, key) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(key, int) and 0 <= key < len(container)


def _exists(data: dict, path: tuple) -> bool:
    node = data
    for part in path:
        if not isinstance(node, (dict, list)) or not _has(node, part):
            return False
        node = node[part]
    return True


def _walk_to_parent(data: dict, source_map: SourceMap, path: tuple, create: bool, where: Position):
    node = data
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, dict):
            if part not in node:
                if not create:
                    return None, Diagnostic("error", "O002", f"`{format_path(path[:depth + 1])}` is not set in the spec",
                                            where, format_path(path),
                                            hint="to add keys that are not in the file, prefix the override with `+`")
                node[part] = {}
                source_map.replace_subtree(path[:depth + 1], where, {})
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None, Diagnostic("error", "O005", f"`{format_path(path[:depth + 1])}` does not lead to a mapping",
                                    where, format_path(path))
    if not isinstance(node, (dict, list)):
        return None, Diagnostic("error", "O005", f"`{format_path(path[:-1])}` is not a mapping or list",
                                where, format_path(path))
    return node, None
