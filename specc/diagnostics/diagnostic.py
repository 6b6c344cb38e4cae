"""The diagnostic record every check produces, and its text and JSON renderings.

One shape for all findings (YAML syntax, schema, cross-field rules, overrides) so that
the CLI prints them alike: `file:line:col: error[CODE] key.path: message` plus a hint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Position:
    """A place in a source: 1-based line and column. Overrides have line 0."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about the user's input."""

    severity: Severity
    code: str
    message: str
    position: Position
    path: str = ""
    """Dotted key path, e.g. `model.num_heads` or `filters[2].threshold`."""
    hint: str | None = None
    context: tuple[str, ...] = field(default=())
    """Source lines shown under the message (YAML syntax errors)."""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self) -> tuple:
        return (self.position.file, self.position.line, self.position.column, self.code, self.message)

    def to_text(self) -> str:
        where = f" {self.path}:" if self.path else ""
        lines = [f"{self.position}: {self.severity}[{self.code}]{where} {self.message}"]
        lines.extend(self.context)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        record = asdict(self)
        record["position"] = asdict(self.position)
        record["context"] = list(self.context)
        return record


def format_path(path: tuple) -> str:
    """`("filters", 2, "threshold")` -> `filters[2].threshold`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def render_text(diagnostics: list[Diagnostic]) -> str:
    """All diagnostics in source order, then a one-line summary."""
    ordered = sorted(diagnostics, key=Diagnostic.sort_key)
    blocks = [d.to_text() for d in ordered]
    errors = sum(d.is_error for d in ordered)
    warnings = len(ordered) - errors
    blocks.append(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return "\n".join(blocks)


def report_json(file: str, diagnostics: list[Diagnostic], valid: bool) -> dict:
    """One file's verdict and diagnostics, for `--format json`."""
    ordered = sorted(diagnostics, key=Diagnostic.sort_key)
    return {"file": file, "valid": valid, "diagnostics": [d.to_json() for d in ordered]}
