"""Pre-flight rules on what input files hold (R280-R281): every record file a `files` source or an
alignment stage will read opens, and its schema has the fields the stage reads, with the right types.

Why: a corpus glob that matched a corrupt parquet shard, or SFT data whose conversations sit in
a `conversations` column, validated and failed only when the stage reached that file, possibly
hours into a run. These rules read what the stage will read, but only its schema: the parquet
footer, the Arrow stream's schema message, the first `formats.SCHEMA_LINES` jsonl records
(`specc.runtime.data.formats.read_schema`), of at most `MAX_SCHEMA_CHECKS` files per path. They
run with R200-R207 (`specc validate` on paths relative to the spec, `specc launch` on all), and
after them: a path that matches nothing is R200's or R203's finding, not repeated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from specc.diagnostics.rules.base import Finding
from specc.diagnostics.rules.path_rules import InputFiles
from specc.spec.root import Spec

MAX_SCHEMA_CHECKS = 10_000
"""Files per path whose schema is read (a footer each: 10,000 parquet shards take seconds)."""
TYPE_HINT = "store the column as strings or as lists of {role, content} messages, or map another column with `fields`"
ALIGNMENT_DATA = {"sft": "data", "dpo": "data", "reward_model": "data", "ppo": "prompts"}
"""The data key of each alignment stage read through `specc.runtime.align.records`."""


def _shown(path: Path, inputs: InputFiles) -> str:
    from specc.runtime.data.formats import display_name

    return display_name(path, inputs.spec_dir)


def corpus_files_have_text(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """Each jsonl, parquet or Arrow file a `files` source matches opens, and its schema has the
    `text_field` (a string or a `{role, content}` message list) and the `id_field` if one is set.

    passes: `{type: files, name: web, path: web/*.parquet}` whose files have a string column `text`
    fails:  the same with a file whose column is `content`; or a file that is not parquet at all
    """
    if spec.corpus is None:
        return
    for index, source in enumerate(spec.corpus.sources):
        if source.type != "files" or not inputs.in_scope(source.path):
            continue
        from specc.runtime.data.documents import DataError
        from specc.runtime.data.formats import read_schema
        from specc.runtime.data.sources import schema_problem, source_files

        try:
            files = source_files(source, inputs.spec_dir)
        except DataError:
            continue  # matches nothing: R200
        for path, kind in [(p, k) for p, k in files if k != "text"][:MAX_SCHEMA_CHECKS]:
            shown = _shown(path, inputs)
            try:
                problem = schema_problem(read_schema(path, kind, shown), source)
            except DataError as error:
                yield Finding(("corpus", "sources", index, "path"), str(error),
                              "fix or remove the file (the data stage would stop there)")
                break
            if problem:
                key = "id_field" if problem.startswith("no id column") else "text_field"
                yield Finding(("corpus", "sources", index, key), f"{shown}: {problem}",
                              "name the field holding the document text (a string or a chat message list)")
                break


def alignment_data_has_fields(spec: Spec, inputs: InputFiles) -> Iterator[Finding]:
    """The data of an SFT, DPO, reward-model or PPO stage opens, and its schema fits one of the
    stage's TRL layouts (`specc.runtime.align.records`): SFT `messages`, `prompt`+`completion`,
    `prompt`+`response` or `text`; preference `prompt`+`chosen`+`rejected` or `chosen`+`rejected`;
    PPO `prompt`; after the stage's `fields` renames, with string or message-list values.

    passes: `{type: dpo, name: dpo, data: prefs.parquet}` with columns prompt, chosen, rejected
    fails:  `{type: sft, name: sft, data: chats/}` whose files hold `conversations`, without
            `fields: {messages: conversations}`
    """
    constitutional: set[str] = set()
    for index, stage in enumerate(spec.alignment):
        if stage.type == "constitutional":
            constitutional.add(stage.name)
            continue
        key = ALIGNMENT_DATA.get(stage.type)
        raw = getattr(stage, key, None) if key else None
        if not raw or raw in constitutional or not inputs.in_scope(raw):
            continue
        from specc.runtime.align.records import FIELDS_HINT, STAGE_KINDS, data_files, layout_problem
        from specc.runtime.data.documents import DataError
        from specc.runtime.data.formats import read_schema

        try:
            files = data_files(raw, inputs.spec_dir, raw)
        except DataError as error:
            if "neither jsonl" in str(error):
                yield Finding(("alignment", index, key), str(error), "give jsonl, parquet or .arrow files")
            continue  # matches nothing: R203
        for path, kind in files[:MAX_SCHEMA_CHECKS]:
            shown = _shown(path, inputs)
            try:
                _, problem = layout_problem(read_schema(path, kind, shown), STAGE_KINDS[stage.type], stage.fields)
            except DataError as error:
                yield Finding(("alignment", index, key), str(error),
                              "fix or remove the file (the stage would stop there)")
                break
            if problem:
                where = ("alignment", index, "fields") if stage.fields else ("alignment", index, key)
                hint = TYPE_HINT if problem.startswith("column ") else FIELDS_HINT
                yield Finding(where, f"{shown}: {problem}", hint)
                break


def alignment_fields_fit_stage(spec: Spec) -> Iterator[Finding]:
    """A stage's `fields` renames only names its own layouts read (`specc.runtime.align.records.LAYOUTS`):
    an SFT stage reads no `chosen`, a PPO stage only `prompt`; a rename it would ignore is a mistake.

    passes: `{type: sft, fields: {messages: conversations}}`     fails: `{type: ppo, fields: {chosen: good}}`
    """
    from specc.runtime.align.records import LAYOUTS, STAGE_KINDS

    for index, stage in enumerate(spec.alignment):
        kind = STAGE_KINDS.get(stage.type)
        if kind is None or not stage.fields:
            continue
        read = {name for layout in LAYOUTS[kind] for name in layout}
        for name in stage.fields:
            if name not in read:
                yield Finding(("alignment", index, "fields", name), f"a {stage.type} stage reads no `{name}` field",
                              f"its fields: {', '.join(sorted(read))}")
