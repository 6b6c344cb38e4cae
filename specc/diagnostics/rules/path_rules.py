"""Pre-flight rules: every local file a stage will read exists and is readable before anything is
emitted or submitted (R200-R207), and no input is a URL the stages cannot open (R208).

Why: a missing alignment data file, tokenizer or chat template validated and failed only
when its stage started, hours into a run. Each rule resolves a spec path exactly as its stage
will (relative paths against the spec's directory: `specc.emit.configs.evaluate.absolute`;
corpus and filter globs with the data stage's `resolve_glob`, eval globs with the eval stage's
`task_files`), so "exists here" means "the stage finds it".

R200-R207 read the filesystem, so they run apart from the pure rules of `RULES`: `specc launch`
checks every path (`--no-path-checks` skips them when the paths exist only on the cluster);
`specc validate` checks the paths relative to the spec, which travel with it, and leaves
absolute ones, which may live only on the cluster, to launch. R208 needs no filesystem and is
one of the ordinary validate rules.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from specc.diagnostics.rules.base import Finding
from specc.spec.root import Spec

BUILTIN_CHAT_TEMPLATES = ("chatml", "llama3")
"""Chat templates shipped with specc (`specc.runtime.align.chat.BUILTIN`)."""
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SKIP_HINT = "or pass --no-path-checks if it exists only on the cluster"
MAX_READ_CHECKS = 10_000
"""Matched files checked for read permission (a glob may match millions of shards)."""


@dataclass(frozen=True)
class InputFiles:
    """Where spec paths resolve and which of them to check."""

    spec_dir: Path
    check_absolute: bool = True
    """False for `specc validate`: absolute paths may exist only on the cluster."""

    def in_scope(self, raw: str) -> bool:
        return not URL.match(raw) and (self.check_absolute or not os.path.isabs(raw))

    def resolve(self, raw: str) -> str:
        from specc.emit.configs.evaluate import absolute

        return absolute(raw, str(self.spec_dir))

    def where(self, raw: str) -> str:
        """How the message names the place looked at (a relative path as written: the full
        path would differ on every machine)."""
        return "relative to the spec's directory" if not os.path.isabs(raw) else "on this machine"


# --- the checks each rule applies --------------------------------------------------------


def _unreadable(files: list[Path]) -> Path | None:
    return next((file for file in files[:MAX_READ_CHECKS] if not os.access(file, os.R_OK)), None)


def _data_glob_problem(raw: str, inputs: InputFiles) -> tuple[str, str] | None:
    """(message, hint) when the data stage's `resolve_glob` would find nothing readable."""
    from specc.runtime.data.documents import DataError
    from specc.runtime.data.sources import resolve_glob

    try:
        files = resolve_glob(raw, inputs.spec_dir, "")
    except DataError as error:
        if Path(inputs.resolve(raw)).is_dir():  # a directory without record files, or a bad saved dataset
            return str(error), "name a directory of jsonl, parquet or .arrow files, or a `save_to_disk` directory"
        if os.path.islink(inputs.resolve(raw)):
            return (f"{raw!r} is a symlink that leads to nothing (broken, or a loop)",
                    "point the link at the data, or name the data itself")
        return (f"no file matches {raw!r} ({inputs.where(raw)})",
                f"fix the path or glob (`**` matches subdirectories); {SKIP_HINT}")
    unreadable = _unreadable(files)
    if unreadable is not None:
        return f"{unreadable} matches {raw!r} but cannot be read (permissions)", "make it readable by the job's user"
    return None


def _file_problem(raw: str, inputs: InputFiles, what: str) -> tuple[str, str] | None:
    """(message, hint) when `raw` is not a readable regular file."""
    path = Path(inputs.resolve(raw))
    if not path.exists():
        return f"{what} {raw!r} does not exist ({inputs.where(raw)})", f"fix the path; {SKIP_HINT}"
    if not path.is_file():
        return f"{what} {raw!r} is not a regular file", "name the file itself"
    if not os.access(path, os.R_OK):
        return f"{what} {raw!r} cannot be read (permissions)", "make it readable by the job's user"
    return None


def _directory_problem(raw: str, inputs: InputFiles, what: str) -> tuple[str, str] | None:
    path = Path(inputs.resolve(raw))
    if not path.exists():
        return (f"{what} {raw!r} is neither an earlier stage nor an existing directory ({inputs.where(raw)})",
                f"name `pretrain`, an earlier stage, or a saved model directory; {SKIP_HINT}")
    if not path.is_dir():
        return f"{what} {raw!r} is not a directory (a model directory holds its weights and config)", \
            "name the model directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{what} {raw!r} cannot be read (permissions)", "make it readable by the job's user"
    return None


def _finding(path: tuple, problem: tuple[str, str] | None) -> Iterator[Finding]:
    if problem is not None:
        yield Finding(path, problem[0], problem[1])


# --- the rules ---------------------------------------------------------------------------


def corpus_files_exist(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """A `files` source's glob matches at least one readable file, as the data stage resolves it
    (relative to the spec file, `**` recursive).

    passes: `path: data/web/*.jsonl` with data/web/a.jsonl next to the spec
    fails:  `path: data/web/*.jsonl` with no such file
    """
    if spec.corpus is None:
        return
    for index, source in enumerate(spec.corpus.sources):
        if source.type == "files" and inputs.in_scope(source.path):
            yield from _finding(("corpus", "sources", index, "path"), _data_glob_problem(source.path, inputs))


def filter_files_exist(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """A filter's model file, classifier example globs and perplexity reference glob match
    readable files (the data stage builds its filters before reading the first document).

    passes: `{type: perplexity, reference: ref/*.txt, max_perplexity: 1000}` with ref/a.txt present
    fails:  `{type: classifier, model_path: quality.bin}` with no quality.bin
    """
    if spec.corpus is None:
        return
    for index, item in enumerate(spec.filters):
        for field in ("model_path", "positive", "negative", "reference"):
            raw = getattr(item, field, None)
            if raw and inputs.in_scope(raw):
                yield from _finding(("filters", index, field), _data_glob_problem(raw, inputs))


def tokenizer_file_exists(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """`tokenizer.path` names a readable tokenizer.json (the tokenize, alignment, eval and deploy stages load it).

    passes: `tokenizer: {path: tok/tokenizer.json}` with that file present
    fails:  `tokenizer: {path: tok/missing.json}`; a file that is not a `tokenizers` JSON
    """
    raw = spec.tokenizer.path
    if not raw or not inputs.in_scope(raw):
        return
    problem = _file_problem(raw, inputs, "tokenizer file")
    if problem is None:
        from specc.spec.hf_config import tokenizer_json_problem

        content = tokenizer_json_problem(Path(inputs.resolve(raw)))
        if content:
            problem = (f"tokenizer file {raw!r} {content}",
                       "name a tokenizer.json written by `tokenizers` (`Tokenizer.save`, `save_pretrained`)")
    yield from _finding(("tokenizer", "path"), problem)


def alignment_data_exists(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """An alignment stage's `data` or `prompts` file exists and is readable, unless it names an
    earlier constitutional stage (whose output it reads); an SFT, DPO, reward-model or PPO stage's
    may also be a glob or a directory (`specc.runtime.align.records`) that matches files.

    passes: `{type: sft, name: sft, data: data/sft.jsonl}` with that file present
    fails:  `{type: dpo, name: dpo, data: data/prefs.jsonl}` with no such file
    """
    constitutional: set[str] = set()
    for index, stage in enumerate(spec.alignment):
        for field in ("data", "prompts"):
            raw = getattr(stage, field, None)
            if raw and raw not in constitutional and inputs.in_scope(raw):
                many = stage.type != "constitutional" and (glob.has_magic(raw) or Path(inputs.resolve(raw)).is_dir())
                problem = _data_glob_problem(raw, inputs) if many else _file_problem(raw, inputs, f"{field} file")
                yield from _finding(("alignment", index, field), problem)
        if stage.type == "constitutional":
            constitutional.add(stage.name)


def chat_template_exists(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """An SFT stage's `chat_template` is built in (`chatml`, `llama3`) or a readable Jinja2 file
    that parses (the stage renders every conversation with it).

    passes: `chat_template: chatml`; `chat_template: templates/mine.jinja` with that file present
    fails:  `chat_template: templates/missing.jinja`; a file with `{% for m in messages %}` unclosed
    """
    for index, stage in enumerate(spec.alignment):
        raw = getattr(stage, "chat_template", None)
        if not raw or raw in BUILTIN_CHAT_TEMPLATES or not inputs.in_scope(raw):
            continue
        path = ("alignment", index, "chat_template")
        problem = _file_problem(raw, inputs, "chat template")
        if problem is not None:
            yield Finding(path, problem[0], f"use {' or '.join(BUILTIN_CHAT_TEMPLATES)}, or {problem[1]}")
            continue
        syntax = _template_syntax_problem(Path(inputs.resolve(raw)))
        if syntax:
            yield Finding(path, f"chat template {raw!r} does not parse: {syntax}",
                          "fix the Jinja2 syntax (the template gets `messages` and `add_generation_prompt`)")


def _template_syntax_problem(path: Path) -> str | None:
    """Why the file is not a Jinja2 template (parsed in the sandbox the stage renders in), or None."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(path.read_text(encoding="utf-8", errors="strict"))
    except TemplateSyntaxError as error:
        return f"line {error.lineno}: {error.message}"
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot be read as UTF-8 text ({error})"
    return None


def init_checkpoints_exist(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """An alignment stage's `init_from` is `pretrain`, an earlier stage, or an existing model
    directory (a DPO `reference` names a stage only: R150).

    passes: `init_from: sft` after a stage named sft; `init_from: /ckpt/base` with that directory present
    fails:  `init_from: /ckpt/base` with no such directory
    """
    earlier = {"pretrain"}
    for index, stage in enumerate(spec.alignment):
        raw = stage.init_from
        if raw not in earlier and inputs.in_scope(raw):
            yield from _finding(("alignment", index, "init_from"), _directory_problem(raw, inputs, "init_from"))
        earlier.add(stage.name)


def eval_files_exist(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Each eval task's and perplexity set's `path` glob matches files, as the eval stage resolves it.

    passes: `{name: arith, type: generative, path: tasks/arith.jsonl}` with that file present
    fails:  `{name: mmlu, type: multiple_choice, path: eval/mmlu.jsonl}` with no such file
    """
    from specc.runtime.evaluate.tasks import task_files

    for section in ("tasks", "perplexity"):
        for index, item in enumerate(getattr(spec.eval, section)):
            if not inputs.in_scope(item.path):
                continue
            try:
                files = task_files(inputs.resolve(item.path))
            except ValueError:
                yield Finding(("eval", section, index, "path"), f"no file matches {item.path!r} "
                              f"({inputs.where(item.path)})", f"fix the path or glob; {SKIP_HINT}")
                continue
            unreadable = _unreadable(files)
            if unreadable is not None:
                yield Finding(("eval", section, index, "path"), f"{unreadable} cannot be read (permissions)",
                              "make it readable by the job's user")


def draft_checkpoint_exists(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """A speculative draft given as an absolute checkpoint path is an existing model directory
    (a relative one names an output of this run, relative to its run directory).

    passes: `speculative: {draft: /ckpt/draft-150m}` with that directory present
    fails:  `speculative: {draft: /ckpt/missing}`
    """
    for index, target in enumerate(spec.deploy.targets):
        draft = target.speculative.draft if target.speculative is not None else None
        if isinstance(draft, str) and os.path.isabs(draft) and inputs.in_scope(draft):
            yield from _finding(("deploy", "targets", index, "speculative", "draft"),
                                _directory_problem(draft, inputs, "draft"))


def inputs_are_local_paths(spec: Spec) -> Iterator[Finding]:
    """The stages read local files only (or a filesystem mounted on the nodes): a URL such as
    `gs://bucket/*.jsonl` would be looked for as a local file and fail when the stage starts.

    passes: `path: /mnt/gcs/web/*.jsonl.gz` (a gcsfuse mount)     fails: `path: gs://my-bucket/web/*.jsonl.gz`
    """
    for path, raw in _input_paths(spec):
        match = URL.match(raw)
        if match:
            yield Finding(path, f"{raw!r} is a URL; the stages read local files only",
                          f"mount it on the nodes (e.g. gcsfuse, s3fs) and give the mounted path instead of "
                          f"{match.group(0)}...")


def _input_paths(spec: Spec) -> Iterator[tuple[tuple, str]]:
    """(key path, value) of every spec value naming a file, glob or directory a stage reads."""
    if spec.corpus is not None:
        for index, source in enumerate(spec.corpus.sources):
            if source.type == "files":
                yield ("corpus", "sources", index, "path"), source.path
    for index, item in enumerate(spec.filters):
        for field in ("model_path", "positive", "negative", "reference"):
            if getattr(item, field, None):
                yield ("filters", index, field), getattr(item, field)
    if spec.tokenizer.path:
        yield ("tokenizer", "path"), spec.tokenizer.path
    for index, stage in enumerate(spec.alignment):
        for field in ("data", "prompts", "chat_template", "init_from", "reference"):
            value = getattr(stage, field, None)
            if isinstance(value, str):
                yield ("alignment", index, field), value
    for section in ("tasks", "perplexity"):
        for index, item in enumerate(getattr(spec.eval, section)):
            yield ("eval", section, index, "path"), item.path
    if spec.eval.lm_eval is not None:
        yield ("eval", "lm_eval", "include_path"), spec.eval.lm_eval.include_path
    for index, target in enumerate(spec.deploy.targets):
        if target.speculative is not None and isinstance(target.speculative.draft, str):
            yield ("deploy", "targets", index, "speculative", "draft"), target.speculative.draft
