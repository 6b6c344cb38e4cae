"""Pre-flight: the filesystem checks of `specc.diagnostics.rules.path_rules` (R200-R207),
`data_format_rules` (R280-R281: record files hold the fields their stage reads) and `eval_rules`
(R292-R294: few-shot files, task-file fields, lm-eval installed; R321-R324: the user's lm-eval task
YAMLs, their names and data) run on a valid spec, located like
every other diagnostic.

Kept out of `check_file`: those rules read the filesystem of the machine they run on, while
`check_file` (and the planner and fuzz tests built on it) depends on the spec text alone.
`specc launch` runs them on every path before emitting anything; `specc validate` on the paths
relative to the spec (see the module docstring of `path_rules`).
"""

from __future__ import annotations

from pathlib import Path

from specc.diagnostics.diagnostic import Diagnostic, format_path
from specc.diagnostics.rules import PATH_RULES
from specc.diagnostics.rules.path_rules import InputFiles
from specc.spec.loader import SourceMap
from specc.spec.root import Spec


def preflight(spec: Spec, source_map: SourceMap, spec_file: Path, check_absolute: bool) -> list[Diagnostic]:
    """Every missing or unreadable input of `spec` (relative paths resolve against the directory of
    `spec_file`, as the emitter resolves them); absolute paths only when `check_absolute`."""
    inputs = InputFiles(Path(spec_file).resolve().parent, check_absolute)
    diagnostics = []
    for rule in PATH_RULES:
        for finding in rule.check(spec, inputs):
            diagnostics.append(Diagnostic(finding.severity, rule.code, finding.message,
                                          source_map.value_at(finding.path), format_path(finding.path),
                                          hint=finding.hint))
    return diagnostics
