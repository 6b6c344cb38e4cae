"""A user's directory of lm-evaluation-harness task YAMLs (`eval.lm_eval.include_path`), read without
lm-eval or torch (`specc validate` imports neither): the task, group and tag names it defines, the
files lm-eval could not read, and whether each task's data is on the local disk.

It follows lm-eval 0.4.13's own index (lm_eval/tasks/_index.py `TaskIndex`, _yaml_loader.py
`load_yaml`): every `**/*.yaml` outside `__pycache__`/`.ipynb_checkpoints`, `include:` files merged
first and the file's own keys winning, `!function` left unresolved; a config with `class` is a
Python task, one with `group` a group, one with `task` a task, and `tag` adds the task to a tag.
lm-eval skips a file it cannot parse without a word (only a debug log), so a task defined there
would just be "not found"; here each such file is a problem with its line and column.

Data: the eval stage runs lm-eval offline (HF_DATASETS_OFFLINE) with the working directory at the
include directory, so a task must read local files: one of the `datasets` file readers (`json`,
`csv`, `parquet`, `text`, `arrow`, `pandas`) with `dataset_kwargs.data_files` (relative to the
include directory, or to `dataset_kwargs.data_dir` when given, as `datasets` resolves them), or a
`dataset_path` that is a local directory.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FILE_READERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})
"""The `datasets` packaged builders that read `data_files` (datasets/packaged_modules)."""
IGNORED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})


class FunctionRef(str):
    """A `!function module.name` value, kept unresolved (validate imports none of the user's code)."""


class _Loader(yaml.SafeLoader):
    """lm-eval's loader without importing the `!function` modules."""


_Loader.add_constructor("!function", lambda loader, node: FunctionRef(f"!function {loader.construct_scalar(node)}"))


class TaskYamlError(ValueError):
    """A task YAML lm-eval cannot load: `file:line:col: why` (line and column when YAML gives them)."""


@dataclass
class TaskDirectory:
    """What a directory of lm-eval YAMLs defines."""

    root: Path
    tasks: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    """task name -> (its YAML, the config with includes merged)."""
    groups: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)
    """tag -> the tasks that carry it."""
    problems: list[str] = field(default_factory=list)
    """One `file:line:col: why` per YAML lm-eval would skip."""

    def names(self) -> list[str]:
        return sorted({*self.tasks, *self.groups, *self.tags})

    def tasks_of(self, name: str, _seen: frozenset[str] = frozenset()) -> tuple[list[tuple[str, dict]], list[str]]:
        """((task name, config) of every task `name` runs, names it lists that the directory does not
        define). A group's `task:` entries are names or inline task configs; a tag runs its tasks."""
        if name in self.tasks:
            return [(name, self.tasks[name][1])], []
        members = self.tags.get(name)
        if members is None and name in self.groups:
            entries = self.groups[name][1].get("task") or []
            members = entries if isinstance(entries, list) else [entries]
        if members is None:
            return [], [name]
        found, missing = [], []
        for member in members:
            if isinstance(member, dict):
                found.append((str(member.get("task", name)), member))
            elif isinstance(member, str) and member not in _seen:
                more, absent = self.tasks_of(member, _seen | {name})
                found += more
                missing += absent
        return found, missing


def load_task_yaml(path: Path, _seen: frozenset[Path] = frozenset()) -> dict:
    """One YAML with its `include:` files merged as lm-eval merges them (includes in order, then
    the file's own keys; an included file's `task_list` is not inherited)."""
    path = path.resolve()
    if path in _seen:
        raise TaskYamlError(f"{path}: `include` cycle")
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark or error.context_mark, error.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        opened = (f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
                  if error.context and context is not None and context is not mark else "")
        raise TaskYamlError(f"{path}{where}: {error.problem or error.context}{opened}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise TaskYamlError(f"{path}: cannot be read ({error})") from None
    if not isinstance(config, dict):
        raise TaskYamlError(f"{path}: an lm-eval config is a mapping, this file holds {type(config).__name__}")
    for ref in _function_refs(config):
        problem = function_problem(ref.removeprefix("!function "), path.parent)
        if problem:
            raise TaskYamlError(f"{path}: `{ref}`: {problem}")
    includes = config.pop("include", None)
    if includes is None:
        return config
    merged: dict = {}
    for include in includes if isinstance(includes, list) else [includes]:
        target = Path(str(include)) if Path(str(include)).is_absolute() else path.parent / str(include)
        if not target.is_file():
            raise TaskYamlError(f"{path}: `include: {include}` names no file (looked for {target})")
        included = load_task_yaml(target, _seen | {path})
        included.pop("task_list", None)
        merged.update(included)
    return merged | config


def _function_refs(config: dict) -> list[FunctionRef]:
    """Every `!function` value in a loaded config, nested ones included. Each collection is visited
    once: YAML aliases share objects, so an alias-heavy file (or a self-referencing one) costs its
    size, not its expanded size."""
    refs: list[FunctionRef] = []
    seen: set[int] = set()
    stack: list = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, FunctionRef):
            refs.append(value)
        elif isinstance(value, (dict, list)) and id(value) not in seen:
            seen.add(id(value))
            stack.extend(value.values() if isinstance(value, dict) else value)
    return refs


def function_problem(qual: str, base_dir: Path) -> str | None:
    """Why lm-eval could not resolve `!function qual` from a YAML in `base_dir`, or None. lm-eval
    0.4.13 (tasks/_yaml_loader.py `_import_func_in_yml`) tries `<module path>.py` next to the YAML,
    then an importable module; a failure there stops the task at the eval stage, after training.
    The local file is parsed, never imported: a name it defines at top level (def, class,
    assignment, import) passes; `from x import *` is taken on trust."""
    module, _, name = qual.strip().rpartition(".")
    if not module or not name:
        return "lm-eval expects `!function <module>.<function>` (e.g. `utils.process_docs`)"
    local = base_dir / f"{module.replace('.', '/')}.py"
    if local.is_file():
        try:
            tree = ast.parse(local.read_bytes(), filename=str(local))
        except (SyntaxError, ValueError, OSError) as error:
            return f"{local} cannot be read as Python ({error})"
        defined = _top_level_names(tree)
        if defined is None or name in defined:
            return None
        return f"{local} defines no `{name}`"
    try:
        found = importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return f"no {local.name} next to the YAML (looked for {local}) and no importable module `{module}`"


def _top_level_names(tree: ast.Module) -> set[str] | None:
    """Names a module defines at top level; None when a star import makes that unknowable."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            return None  # conditional definitions: not followed here
    return names


def read_task_directory(root: Path) -> TaskDirectory:
    """Index `root` as lm-eval's TaskManager(include_path=root) would; the first definition of a
    name wins, as in lm-eval (files in sorted path order)."""
    directory = TaskDirectory(root)
    files = sorted((p for p in root.glob("**/*.yaml") if not IGNORED_DIRS & set(p.parts)), key=lambda p: p.as_posix())
    for path in files:
        try:
            config = load_task_yaml(path)
        except TaskYamlError as error:
            directory.problems.append(str(error))
            continue
        if "group" in config and "class" not in config:
            directory.groups.setdefault(str(config["group"]), (path, config))
        elif "task" in config and isinstance(config["task"], str):
            name = config["task"]
            if name in directory.tasks:
                continue
            directory.tasks[name] = (path, config)
            tags = config.get("tag") or []
            for tag in tags if isinstance(tags, list) else [tags]:
                directory.tags.setdefault(str(tag), []).append(name)
        # else: neither task nor group, e.g. a template other files `include:` (lm-eval skips it too)
    return directory


def data_problem(config: dict, root: Path) -> str | None:
    """Why lm-eval could not load this task's data offline from local files, or None."""
    if "class" in config or config.get("custom_dataset"):
        return None  # the task's own Python code loads its data
    source = config.get("dataset_path")
    if not isinstance(source, str) or not source:
        return "has no `dataset_path`"
    kwargs = config.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        return f"`dataset_kwargs` is a {type(kwargs).__name__}; lm-eval passes it to `datasets.load_dataset` as keyword arguments (a mapping)"
    if source not in FILE_READERS:
        if (Path(source) if Path(source).is_absolute() else root / source).exists():
            return None
        return (f"`dataset_path: {source}` is neither a local directory nor one of the file readers "
                f"({', '.join(sorted(FILE_READERS))}): a Hugging Face Hub dataset, which the offline eval stage cannot download")
    data_dir = kwargs.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        return f"`dataset_kwargs.data_dir` is {data_dir!r}, not a path"
    base = root / data_dir if isinstance(data_dir, str) else root
    patterns = _patterns(kwargs.get("data_files"))
    if not patterns:
        return f"`dataset_path: {source}` reads `dataset_kwargs.data_files`, which it does not give"
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        if not glob.glob(full, recursive=True):
            return f"data file {pattern!r} matches nothing (looked for {full})"
    return None


def _patterns(data_files) -> list[str]:
    """The paths and globs of `data_files`: a string, a list, or a split -> string/list mapping."""
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, list):
        return [str(p) for p in data_files]
    if isinstance(data_files, dict):
        return [p for value in data_files.values() for p in _patterns(value)]
    return []
