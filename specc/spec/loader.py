"""YAML -> plain data with a source position for every key and value.

PyYAML's `safe_load` loses positions and silently keeps the last of two duplicate
keys. We compose the node graph instead and build the data ourselves, recording where
each key and value came from, so that every later diagnostic can point at
`file:line:col`. `extends:` composition and `--set` overrides are applied here too,
keeping positions (an overridden value points at `<override #N>`).
"""

from __future__ import annotations

import copy
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from specc.diagnostics.diagnostic import Diagnostic, Position, format_path

MAX_NODES = 200_000
MAX_DEPTH = 64          # deepest real spec nests ~6 levels; PyYAML recurses per level
MAX_BYTES = 4 * 1024 * 1024  # tiny.yaml is ~1 KB; 4 MB keeps parse time near a second
"""Alias expansion ("billion laughs") guard: a spec never needs more values than this."""


@dataclass
class SourceMap:
    """Key path -> where the key and its value were written."""

    keys: dict[tuple, Position] = field(default_factory=dict)
    values: dict[tuple, Position] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def value_at(self, path: tuple) -> Position:
        """Position of the value at `path`, else of its nearest written ancestor."""
        return self._nearest(self.values, path)

    def key_at(self, path: tuple) -> Position:
        """Position of the key at `path` (its value if the key has none, e.g. a list item)."""
        if path in self.keys:
            return self.keys[path]
        return self.value_at(path)

    def _nearest(self, table: dict[tuple, Position], path: tuple) -> Position:
        for end in range(len(path), -1, -1):
            if path[:end] in table:
                return table[path[:end]]
        return Position(self.files[0] if self.files else "<spec>", 1, 1)

    def merge_under(self, other: SourceMap) -> None:
        """Take `other`'s entries where this map has none (this map wins: it is the child)."""
        for path, pos in other.keys.items():
            self.keys.setdefault(path, pos)
        for path, pos in other.values.items():
            self.values.setdefault(path, pos)
        self.files.extend(f for f in other.files if f not in self.files)

    def replace_subtree(self, path: tuple, position: Position, value: object) -> None:
        """Point `path` and everything under it at `position` (a `--set` override)."""
        for table in (self.keys, self.values):
            for key in [k for k in table if k[: len(path)] == path]:
                del table[key]
        self.keys[path] = position
        for sub_path in _paths_in(value, path):
            self.values[sub_path] = position
            self.keys.setdefault(sub_path, position)


def _paths_in(value: object, prefix: tuple):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths_in(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_in(item, prefix + (index,))


@dataclass
class Loaded:
    """The result of loading: data (None if unreadable), positions, and problems found."""

    data: dict | None
    source_map: SourceMap
    diagnostics: list[Diagnostic]
    text_by_file: dict[str, str] = field(default_factory=dict)


class _Builder:
    """Turns a composed YAML node graph into Python data, recording positions."""

    def __init__(self, filename: str, source_map: SourceMap):
        self.filename = filename
        self.source_map = source_map
        self.diagnostics: list[Diagnostic] = []
        self.constructor = yaml.constructor.SafeConstructor()
        self.node_count = 0
        self.active: set[int] = set()

    def position(self, node: yaml.Node) -> Position:
        return Position(self.filename, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: tuple) -> object:
        self.node_count += 1
        if self.node_count > MAX_NODES:
            raise _TooBig(self.position(node))
        if id(node) in self.active:
            raise _Recursive(self.position(node))
        if len(path) > MAX_DEPTH:
            raise _TooDeep(self.position(node))
        self.source_map.values.setdefault(path, self.position(node))
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            items = [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
            self.active.discard(id(node))
            return items
        return self.constructor.construct_object(node, deep=True)

    def _build_mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        own_keys = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
        self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        self.active.add(id(node))
        result: dict = {}
        first_seen: dict = {}
        for key_node, value_node in node.value:
            if id(key_node) not in own_keys:  # merged in: explicit keys written later override it
                key = self.constructor.construct_object(key_node)
                if isinstance(key, (str, int)) and key not in result:
                    result[key] = self.build(value_node, path + (key,))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._error("Y003", "a key must be a plain scalar, not a list or mapping", key_node, path)
                continue
            key = self.constructor.construct_object(key_node)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                key = str(key_node.value)
            if key in first_seen:
                first = first_seen[key]
                self.diagnostics.append(Diagnostic(
                    "error", "Y002", f"duplicate key `{key}` (first written at line {first.line})",
                    self.position(key_node), format_path(path + (key,)),
                    hint="YAML keeps only one of them; delete or merge the other",
                ))
                continue
            first_seen[key] = self.position(key_node)
            self.source_map.keys[path + (key,)] = self.position(key_node)
            self.source_map.values[path + (key,)] = self.position(value_node)
            result[key] = self.build(value_node, path + (key,))
        self.active.discard(id(node))
        return result

    def _error(self, code: str, message: str, node: yaml.Node, path: tuple) -> None:
        self.diagnostics.append(Diagnostic("error", code, message, self.position(node), format_path(path)))


class _TooBig(Exception):
    def __init__(self, position: Position):
        self.position = position


class _TooDeep(Exception):
    def __init__(self, position: Position):
        self.position = position


class _Recursive(Exception):
    def __init__(self, position: Position):
        self.position = position


def numbered_context(text: str, line: int, column: int, around: int = 2) -> tuple[str, ...]:
    """Source lines around `line` (1-based) with a caret under `column`."""
    lines = text.splitlines()
    start, end = max(1, line - around), min(len(lines), line + around)
    width = len(str(end))
    out = []
    for number in range(start, end + 1):
        marker = ">" if number == line else " "
        out.append(f"  {marker} {number:>{width}} | {lines[number - 1]}")
        if number == line:
            out.append(f"    {' ' * width} | {' ' * max(0, column - 1)}^")
    return tuple(out)


def parse_yaml(text: str, filename: str) -> Loaded:
    """Parse one YAML document, keeping positions; syntax errors become Y001 diagnostics."""
    source_map = SourceMap(files=[filename])
    too_deep = _deep_collection(text, filename)
    if too_deep:
        return Loaded(None, source_map, [too_deep], {filename: text})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = error.problem or error.context or "invalid YAML"
        context = numbered_context(text, line, column) if mark else ()
        hint = "check indentation and quoting near the caret; quote values containing `: ` or `#`"
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y001", f"YAML syntax error: {problem}", Position(filename, line, column),
            context=context, hint=hint)], {filename: text})
    except yaml.YAMLError as error:
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y001", f"YAML error: {error}", Position(filename, 1, 1))], {filename: text})
    if node is None:
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y004", "the spec is empty", Position(filename, 1, 1),
            hint="start from `specs/tiny.yaml`")], {filename: text})
    builder = _Builder(filename, source_map)
    try:
        data = builder.build(node, ())
    except _TooBig as too_big:
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y005", f"the spec expands to more than {MAX_NODES} values (alias bomb?)",
            too_big.position)], {filename: text})
    except _TooDeep as deep:
        return Loaded(None, source_map, [_depth_diagnostic(deep.position)], {filename: text})
    except _Recursive as recursive:
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y006", "an alias refers to a node that contains it", recursive.position)],
            {filename: text})
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        return Loaded(None, source_map, [Diagnostic(
            "error", "Y001", f"cannot read value: {error}", Position(filename, 1, 1))], {filename: text})
    if not isinstance(data, dict):
        return Loaded(None, source_map, builder.diagnostics + [Diagnostic(
            "error", "Y004", f"the spec must be a mapping of sections, not a {type(data).__name__}",
            Position(filename, 1, 1), hint="start from `specs/tiny.yaml`")], {filename: text})
    return Loaded(data, source_map, builder.diagnostics, {filename: text})


def _depth_diagnostic(position: Position) -> Diagnostic:
    return Diagnostic("error", "Y011", f"collections nest more than {MAX_DEPTH} levels deep", position,
                      hint="a spec nests a few levels; flatten the value or check for a runaway paste")


def _deep_collection(text: str, filename: str) -> Diagnostic | None:
    """Reject nesting beyond MAX_DEPTH before PyYAML's recursive composer sees it.

    Scans events (a flat stream, no recursion), so 100k nested `[` costs one pass instead of a
    RecursionError; flow and block collections both emit Start/End events.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    return _depth_diagnostic(Position(filename, mark.line + 1, mark.column + 1))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except (yaml.YAMLError, RecursionError):
        return None  # syntax errors are reported, located, by compose below
    return None


def parse_value(text: str, filename: str) -> tuple[object, Diagnostic | None]:
    """One YAML value (a `--set` right-hand side) under the same depth/alias/size limits as a file.

    Text that is not YAML stays a plain string, as before; an alias bomb, a self-referencing
    alias or runaway nesting is an error instead of a RecursionError or MemoryError later.
    """
    where = Position(filename)
    if len(text) > MAX_BYTES:
        return None, Diagnostic("error", "Y012", f"the value is longer than {MAX_BYTES // 2**20} MB", where)
    too_deep = _deep_collection(text, filename)
    if too_deep:
        return None, Diagnostic("error", "Y011", f"the value's {too_deep.message}", where, hint=too_deep.hint)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return text, None
    if node is None:
        return None, None
    builder = _Builder(filename, SourceMap(files=[filename]))
    try:
        return builder.build(node, ()), None
    except _TooBig:
        return None, Diagnostic("error", "Y005", f"the value expands to more than {MAX_NODES} values (alias bomb?)",
                                where)
    except _Recursive:
        return None, Diagnostic("error", "Y006", "an alias in the value refers to a node that contains it", where)
    except _TooDeep:
        return None, Diagnostic("error", "Y011", f"the value nests more than {MAX_DEPTH} levels deep", where)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        return text, None


def _special_file(path: Path, shown_as: str) -> Diagnostic | None:
    """Refuse FIFOs, devices, sockets and oversized files before reading a byte.

    Reading /dev/zero never ends and a FIFO blocks forever, so the kind and size are checked
    with stat first; a missing path falls through to the read, which reports it.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(info.st_mode):
        return Diagnostic("error", "Y007", f"{shown_as} is a directory, not a spec file", Position(shown_as))
    if not stat.S_ISREG(info.st_mode):
        return Diagnostic("error", "Y012", f"{shown_as} is not a regular file (a FIFO, device or socket)",
                          Position(shown_as), hint="pass a spec saved as an ordinary .yaml file")
    if info.st_size > MAX_BYTES:
        return Diagnostic("error", "Y012", f"{shown_as} is {info.st_size / 2**20:.1f} MB; specs are limited to "
                          f"{MAX_BYTES // 2**20} MB", Position(shown_as),
                          hint="a spec is a few KB; check that the right file was passed")
    return None


def read_text(path: Path, shown_as: str) -> tuple[str | None, Diagnostic | None]:
    """File contents, or a located diagnostic saying why it cannot be read."""
    special = _special_file(path, shown_as)
    if special:
        return None, special
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:  # grew between stat and read
            return None, Diagnostic("error", "Y012", f"{shown_as} is larger than {MAX_BYTES // 2**20} MB",
                                    Position(shown_as))
    except FileNotFoundError:
        return None, Diagnostic("error", "Y007", f"file not found: {shown_as}", Position(shown_as))
    except IsADirectoryError:
        return None, Diagnostic("error", "Y007", f"{shown_as} is a directory, not a spec file", Position(shown_as))
    except OSError as error:
        return None, Diagnostic("error", "Y007", f"cannot read {shown_as}: {error.strerror}", Position(shown_as))
    except ValueError:
        return None, Diagnostic("error", "Y007", f"{shown_as!r} is not a usable file path", Position(repr(shown_as)))
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return None, Diagnostic("error", "Y008", "the file is not valid UTF-8 text",
                                Position(shown_as, line, column), hint="save the spec as UTF-8")


def load_file(path: Path, shown_as: str | None = None, _stack: tuple[Path, ...] = ()) -> Loaded:
    """Load a spec file and the files it `extends`, child values winning."""
    shown_as = shown_as or str(path)
    text, problem = read_text(path, shown_as)
    if problem:
        return Loaded(None, SourceMap(files=[shown_as]), [problem])
    loaded = parse_yaml(text, shown_as)
    if loaded.data is None or "extends" not in loaded.data:
        return loaded
    return _apply_extends(loaded, path, shown_as, _stack + (path.resolve(),))


def _apply_extends(child: Loaded, path: Path, shown_as: str, stack: tuple[Path, ...]) -> Loaded:
    bases = child.data.pop("extends")
    base_list = bases if isinstance(bases, list) else [bases]
    merged: dict = {}
    merged_map = SourceMap(files=[shown_as])
    diagnostics = list(child.diagnostics)
    texts = dict(child.text_by_file)
    for index, base in enumerate(base_list):
        key_path = ("extends",) if not isinstance(bases, list) else ("extends", index)
        where = child.source_map.value_at(key_path)
        if not isinstance(base, str) or not base:
            diagnostics.append(Diagnostic("error", "Y009", "`extends` takes a file path or a list of paths",
                                          where, "extends"))
            continue
        base_path = path.parent / base
        base_shown = str(Path(shown_as).parent / base)
        try:
            resolved = base_path.resolve()
        except (OSError, ValueError, RuntimeError):
            diagnostics.append(Diagnostic("error", "Y009", f"`extends` path {base!r} is not a usable file path",
                                          where, "extends"))
            continue
        if resolved in stack:
            chain = " -> ".join(p.name for p in stack + (resolved,))
            diagnostics.append(Diagnostic("error", "Y010", f"`extends` cycle: {chain}", where, "extends",
                                          hint="a spec cannot extend itself, directly or through another file"))
            continue
        loaded = load_file(base_path, base_shown, stack)
        if loaded.data is None and loaded.diagnostics and loaded.diagnostics[0].code == "Y007":
            diagnostics.append(Diagnostic("error", "Y007", f"extended file not found: {base_shown}", where,
                                          "extends", hint="paths in `extends` are relative to this file"))
            continue
        if loaded.data is None and loaded.diagnostics and loaded.diagnostics[0].code == "Y012":
            first = loaded.diagnostics[0]
            diagnostics.append(Diagnostic("error", "Y012", f"`extends` target: {first.message}", where,
                                          "extends", hint=first.hint))
            continue
        diagnostics.extend(loaded.diagnostics)
        texts.update(loaded.text_by_file)
        if loaded.data is not None:
            merged = deep_merge(merged, loaded.data)
            later = copy.copy(loaded.source_map)
            later.merge_under(merged_map)
            merged_map = later
    data = deep_merge(merged, child.data)
    child.source_map.merge_under(merged_map)
    return Loaded(data, child.source_map, diagnostics, texts)


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; any other value (lists included) is replaced."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result
