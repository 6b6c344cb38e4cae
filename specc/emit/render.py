"""Template rendering: Jinja2 in a sandbox, where every printed value is shell-quoted.

Why quote in `finalize` rather than with a filter: a filter must be remembered at
every `{{ }}`, and one forgotten filter is a shell injection. With finalize the safe
thing is the default; text that must reach the script verbatim (a line the emitter
composed itself from already-quoted pieces) is wrapped in `Raw` by Python code, or
passed through the `raw` filter in a template, which makes every unquoted spot
greppable. Values from the spec are never marked raw.

Templates resolve per target with a fallback, as dbt does: `templates/<target>/<name>`
first, else `templates/default/<name>`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES_ENV = "SPECC_TEMPLATES"


class Raw(str):
    """Text the emitter vouches for: printed as is, not shell-quoted."""


class RenderError(Exception):
    """A template could not be found or rendered (a broken installation, not user input)."""


def shell_quote(value: object) -> str:
    """The `finalize` hook: the text of `value`, safe to paste into a shell script.

    `Raw` passes through; booleans become `true`/`false`; numbers print as numbers
    (shlex.quote leaves them bare); everything else is `shlex.quote`d, so
    `x'; rm -rf /` prints as `'x'"'"'; rm -rf /'` and stays one inert word.
    """
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        raise RenderError("a template printed None; the emitter must resolve every value it renders")
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(str(value))


def plain_text(value: object) -> str:
    """The `finalize` hook of documentation templates (`*.md.j2`): one line of text.

    Documents are read, not executed, so nothing is quoted; newlines are folded so
    that a spec string cannot forge a heading or a code block.
    """
    if value is None:
        raise RenderError("a template printed None; the emitter must resolve every value it renders")
    return " ".join(str(value).split())


def _raw_filter(value: object) -> Raw:
    return Raw(str(value))


def _quote_words(words: list[str]) -> Raw:
    """`["srun", "a b"]` -> `srun 'a b'`: a command line made of individually quoted words."""
    return Raw(" ".join(shlex.quote(str(word)) for word in words))


def templates_root() -> Path:
    """The `templates/` directory: `$SPECC_TEMPLATES`, else the one beside the package.

    The templates live at the top of the repository (editable installs, the project's
    setup) so that a site can fork them without touching Python code.
    """
    override = os.environ.get(TEMPLATES_ENV)
    root = Path(override) if override else Path(__file__).resolve().parents[2] / "templates"
    if not (root / "default").is_dir():
        raise RenderError(f"templates not found at {root} (set ${TEMPLATES_ENV} to the templates/ directory)")
    return root


class Renderer:
    """Renders templates for one target, falling back to `default/`."""

    def __init__(self, target: str, root: Path | None = None):
        root = root or templates_root()
        self.target = target
        loaders = [FileSystemLoader(str(root / target))] if (root / target).is_dir() else []
        loaders.append(FileSystemLoader(str(root / "default")))
        self.shell = _environment(ChoiceLoader(loaders), shell_quote)
        self.text = _environment(ChoiceLoader(loaders), plain_text)

    def render(self, template_name: str, /, **context: object) -> str:
        """Render `template_name` (e.g. `run.sh.j2`) with `context`; `*.md.j2` renders as text."""
        environment = self.text if template_name.endswith(".md.j2") else self.shell
        try:
            template = environment.get_template(template_name)
        except TemplateNotFound:
            raise RenderError(f"no template {template_name!r} for target {self.target!r} "
                              f"nor in default/") from None
        return template.render(**context)


def _environment(loader: ChoiceLoader, finalize) -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        finalize=finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["raw"] = _raw_filter
    environment.filters["quote_words"] = _quote_words
    return environment
