"""Evaluation rules (R290-R294, R320-R324): the backend can run each task, and task files hold the
fields their format reads (`specc.evaltasks`), found before the run rather than after training.

R290 and R291 read the spec alone (RULES). R292-R294 read the filesystem or the environment, so
they are pre-flight rules (PATH_RULES, `specc.diagnostics.preflight`): `specc launch` checks every
path, `specc validate` the paths relative to the spec; R294 runs at launch only. R320-R324 check
`eval.lm_eval`, the user's own lm-eval task YAMLs: the backend (R320, spec only), then the
directory (R321), its files (R322), the task names (R323) and their data (R324).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

from specc.diagnostics.rules.base import Finding
from specc.diagnostics.rules.path_rules import SKIP_HINT, InputFiles
from specc.evaltasks import FORMATS, FormatError, read_rows
from specc.spec.root import Spec

ROWS_CHECKED = 1000
"""Rows read per file by R293 (a benchmark file is small; a glob may name many)."""
FILES_CHECKED = 20
MAX_YAML_PROBLEMS = 20
"""Unreadable task YAMLs reported (R322) before the rest are left to the next run."""


def backend_runs_task_type(spec: Spec) -> Iterator[Finding]:
    """`eval.backend: lm_eval` runs the library formats (`hellaswag`, `mmlu`, `arc`, `gsm8k`,
    `multiple_choice`); specc's regex-scored `generative` type exists on the built-in backend only.

    passes: `backend: lm_eval` with `{type: gsm8k, path: gsm8k/test.jsonl}`
    fails:  `backend: lm_eval` with `{type: generative, path: arith.jsonl, answer_pattern: "(\\d+)"}`
    """
    if spec.eval.backend != "lm_eval":
        return
    for index, task in enumerate(spec.eval.tasks):
        if task.type not in FORMATS:
            yield Finding(("eval", "tasks", index, "type"),
                          f"type {task.type!r} is scored by specc's built-in harness only; backend lm_eval runs "
                          f"{', '.join(FORMATS)}",
                          "use `type: gsm8k` (a `#### <answer>` reference) for generation, or `eval.backend: builtin`")


def task_options_apply(spec: Spec) -> Iterator[Finding]:
    """`fewshot_path` is read by the library formats only; `answer_pattern` by `generative` only
    (a library format extracts answers with its own filters, e.g. GSM8K's `#### (...)`).

    passes: `{type: mmlu, path: mmlu/test.jsonl, fewshot_path: mmlu/dev.jsonl}`
    fails:  `{type: generative, path: arith.jsonl, fewshot_path: shots.jsonl}`; `{type: gsm8k, answer_pattern: "(\\d+)"}` (warning)
    """
    for index, task in enumerate(spec.eval.tasks):
        if task.fewshot_path is not None and task.type not in FORMATS:
            yield Finding(("eval", "tasks", index, "fewshot_path"),
                          f"fewshot_path is not read by {task.type!r} tasks (their examples come from `path`)",
                          f"remove it, or use one of the library formats: {', '.join(FORMATS)}")
        if task.answer_pattern is not None and task.type in FORMATS and task.type != "multiple_choice":
            yield Finding(("eval", "tasks", index, "answer_pattern"),
                          f"answer_pattern is ignored by {task.type!r}: the format extracts answers with its own filters",
                          "remove it", severity="warning")


def fewshot_files_exist(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """A task's `fewshot_path` glob matches readable files, as the eval stage resolves it.

    passes: `{type: mmlu, path: mmlu/test.jsonl, fewshot_path: mmlu/dev.jsonl}` with both present
    fails:  `fewshot_path: mmlu/dev.jsonl` with no such file
    """
    for index, task in enumerate(spec.eval.tasks):
        if task.fewshot_path and inputs.in_scope(task.fewshot_path):
            problem = _eval_glob_problem(task.fewshot_path, inputs)
            if problem:
                yield Finding(("eval", "tasks", index, "fewshot_path"), *problem)


def _eval_glob_problem(raw: str, inputs: InputFiles) -> tuple[str, str] | None:
    from specc.runtime.evaluate.tasks import task_files

    try:
        task_files(inputs.resolve(raw))
    except ValueError:
        return f"no file matches {raw!r} ({inputs.where(raw)})", f"fix the path or glob; {SKIP_HINT}"
    return None


def task_files_have_fields(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Every row of a library-format task file (the first 1000 of each of the first 20 files) is a
    JSON object with the fields its format reads, shaped as the format expects (docs/evaltasks.md).

    passes: `{type: arc, path: arc/test.jsonl}` whose rows have question, choices {text, label}, answerKey
    fails:  `{type: hellaswag, path: hs.jsonl}` whose rows lack `endings`
    """
    from specc.runtime.evaluate.tasks import task_files

    for index, task in enumerate(spec.eval.tasks):
        if task.type not in FORMATS:
            continue
        for field, raw in (("path", task.path), ("fewshot_path", task.fewshot_path)):
            if not raw or not inputs.in_scope(raw):
                continue
            try:
                files = task_files(inputs.resolve(raw))
            except ValueError:
                continue  # R206 / R292 report it
            problem = _first_bad_row(files[:FILES_CHECKED], task.type, inputs.spec_dir)
            if problem:
                fmt = FORMATS[task.type]
                yield Finding(("eval", "tasks", index, field), problem,
                              f"{task.type} rows need {', '.join(fmt.fields)} (docs/evaltasks.md: "
                              f"the layout of the benchmark's Hugging Face dataset)")


def _first_bad_row(files: list[Path], format_name: str, spec_dir: Path) -> str | None:
    """`file:line: what is wrong` for the first row the format cannot read (the file named
    relative to the spec's directory when it lies under it)."""
    process = FORMATS[format_name].process
    for path in files:
        shown = os.path.relpath(path, spec_dir) if path.resolve().is_relative_to(spec_dir.resolve()) else str(path)
        try:
            rows = read_rows(path, ROWS_CHECKED)
        except FormatError as error:
            return str(error).replace(str(path), shown, 1)
        except (UnicodeDecodeError, OSError) as error:
            return f"{shown}: cannot be read as UTF-8 text ({error})"
        if not rows:
            return f"{shown} has no rows"
        for number, row in rows:
            try:
                process(row)
            except FormatError as error:
                return f"{shown}:{number}: {error}"
    return None


def lm_eval_is_installed(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """`eval.backend: lm_eval` needs lm-evaluation-harness where the stage runs (checked at launch,
    on the launching machine's environment, which the local executor and a shared cluster
    environment use).

    passes: `backend: lm_eval` with `pip install 'specc[eval]'` done     fails: the same without lm-eval installed
    """
    if spec.eval.backend == "lm_eval" and inputs.check_absolute and importlib.util.find_spec("lm_eval") is None:
        yield Finding(("eval", "backend"), "backend lm_eval needs lm-evaluation-harness, which is not installed here",
                      "pip install 'specc[eval]' (lm-eval 0.4.13), or use `backend: builtin`; pass --no-path-checks "
                      "if only the cluster's environment has it")


# --- eval.lm_eval: the user's own lm-eval task YAMLs (R320-R324) ---------------------------------


def lm_eval_tasks_need_backend(spec: Spec) -> Iterator[Finding]:
    """`eval.lm_eval` names tasks only lm-evaluation-harness can run (their YAML is lm-eval's own
    format), so the spec must choose that backend.

    passes: `eval: {backend: lm_eval, lm_eval: {include_path: my_tasks, tasks: [my_qa]}}`
    fails:  `eval: {lm_eval: {include_path: my_tasks, tasks: [my_qa]}}` (backend builtin by default)
    """
    if spec.eval.lm_eval is not None and spec.eval.backend != "lm_eval":
        yield Finding(("eval", "lm_eval"), "lm-eval task YAMLs run on lm-evaluation-harness, but eval.backend is "
                      f"{spec.eval.backend!r}", "set `eval.backend: lm_eval` (the library formats in eval.tasks then "
                      "run on lm-eval too, with the same scores)")


def _task_directory(spec: Spec, inputs: InputFiles):
    """The indexed include directory, or None when it is out of scope or missing (R321 says so)."""
    options = spec.eval.lm_eval
    if options is None or not inputs.in_scope(options.include_path):
        return None
    root = Path(inputs.resolve(options.include_path))
    if not root.is_dir():
        return None
    files = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.glob("**/*.yaml")))
    return _indexed(root, files)


@functools.lru_cache(maxsize=4)
def _indexed(root: Path, files: tuple):
    """R322-R324 read one index; `files` (path, mtime, size) keys it, so an edited YAML is read again."""
    from specc.evaltasks.task_yamls import read_task_directory

    return read_task_directory(root)


def _shown(text: str, inputs: InputFiles) -> str:
    """A message with the spec's directory left out of the file names it quotes."""
    return text.replace(str(inputs.spec_dir.resolve()) + os.sep, "")


def lm_eval_directory_exists(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """`eval.lm_eval.include_path` is a directory holding `.yaml` files (searched recursively).

    passes: `include_path: my_tasks` with `my_tasks/qa.yaml`
    fails:  `include_path: my_taks` (no such directory); a directory without any `.yaml`
    """
    options = spec.eval.lm_eval
    if options is None or not inputs.in_scope(options.include_path):
        return
    root = Path(inputs.resolve(options.include_path))
    if not root.is_dir():
        kind = "is a file, not a directory" if root.exists() else "does not exist"
        yield Finding(("eval", "lm_eval", "include_path"), f"{options.include_path!r} {kind} "
                      f"({inputs.where(options.include_path)})",
                      f"name the directory of your lm-eval task YAMLs; {SKIP_HINT}")
    elif not any(root.glob("**/*.yaml")):
        yield Finding(("eval", "lm_eval", "include_path"), f"{options.include_path!r} holds no .yaml file",
                      "lm-eval reads task configs from `*.yaml` files (not .yml)")


def lm_eval_yamls_are_readable(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Every `.yaml` under the include directory is an lm-eval config lm-eval can load: YAML that
    parses, a mapping, its `include:` files present, with `task:` or `group:`. lm-eval itself
    skips such a file silently, so the tasks in it would only be "not found" at the end of training.

    passes: `qa.yaml` = `task: my_qa` + `dataset_path: json` ...
    fails:  `qa.yaml` with `doc_to_text: "Q: {{question}}` (unterminated string); `include: base.yaml` missing
    """
    directory = _task_directory(spec, inputs)
    for problem in directory.problems[:MAX_YAML_PROBLEMS] if directory is not None else []:
        yield Finding(("eval", "lm_eval", "include_path"), _shown(problem, inputs),
                      "fix the file, or move it out of the include directory (lm-eval would skip it)")


def lm_eval_tasks_are_defined(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Each name in `eval.lm_eval.tasks` is a task, group or tag defined in the include directory,
    and each group lists only tasks defined there (the stage runs lm-eval with that directory alone:
    lm-eval's own task library reads from the Hugging Face Hub, which the offline stage cannot).

    passes: `tasks: [my_qa]` with a YAML holding `task: my_qa`
    fails:  `tasks: [my_qaa]`; a group `my_suite` listing `hellaswag`, which the directory does not define
    """
    import difflib

    directory = _task_directory(spec, inputs)
    if directory is None:
        return
    names = directory.names()
    for index, name in enumerate(spec.eval.lm_eval.tasks):
        _, missing = directory.tasks_of(name)
        if missing == [name]:
            close = difflib.get_close_matches(name, names, n=1)
            yield Finding(("eval", "lm_eval", "tasks", index),
                          f"no task, group or tag `{name}` in {spec.eval.lm_eval.include_path!r}",
                          f"did you mean `{close[0]}`?" if close else
                          f"it defines: {', '.join(names[:12]) or 'nothing'}{' ...' if len(names) > 12 else ''}")
        elif missing:
            yield Finding(("eval", "lm_eval", "tasks", index),
                          f"`{name}` runs {', '.join(f'`{m}`' for m in missing)}, which {spec.eval.lm_eval.include_path!r} "
                          "does not define", "add their YAMLs to the directory (with local data files)")


def lm_eval_task_data_is_local(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Each task the spec runs reads local files, which exist: `dataset_path` is a `datasets` file
    reader (`json`, `csv`, `parquet`, ...) whose `dataset_kwargs.data_files` match files (relative
    to the include directory), or a local directory. The stage runs offline (HF_DATASETS_OFFLINE).

    passes: `dataset_path: json`, `dataset_kwargs: {data_files: {test: data/qa.jsonl}}` with that file
    fails:  `dataset_path: Rowan/hellaswag` (the Hub); `data_files: data/qa.jsonl` missing
    """
    from specc.evaltasks.task_yamls import data_problem

    directory = _task_directory(spec, inputs)
    if directory is None:
        return
    for index, name in enumerate(spec.eval.lm_eval.tasks):
        for task, config in directory.tasks_of(name)[0]:
            problem = data_problem(config, directory.root)
            if problem:
                source = directory.tasks[task][0] if task in directory.tasks else directory.root
                yield Finding(("eval", "lm_eval", "tasks", index),
                              _shown(f"task `{task}` ({source}): {problem}", inputs),
                              "the stage reads local files only: `dataset_path: json` with `dataset_kwargs: "
                              "{data_files: {test: <file>}}`, relative to the include directory (docs/evaltasks.md)")
