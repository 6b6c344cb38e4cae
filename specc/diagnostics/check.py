"""The validate phase: load -> schema -> cross-field rules, collecting every diagnostic.

Sections are validated as a whole first (for pydantic's complete error list), then the
sections without errors are validated on their own so that rules reading only those
sections still run: a typo in `deploy` does not hide an impossible `parallel` layout.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from specc.diagnostics.diagnostic import Diagnostic, format_path
from specc.diagnostics.rules import RULES
from specc.diagnostics.rules.hf_rules import apply_init_from, suppresses
from specc.diagnostics.schema_errors import diagnostics_from_validation
from specc.diagnostics.user_catalog import apply_user_catalog
from specc.spec.loader import Loaded, SourceMap, load_file
from specc.spec.overrides import apply_overrides
from specc.spec.root import Spec


@dataclass
class CheckResult:
    """Everything `validate` learned: the typed spec (when valid) and the diagnostics."""

    spec: Spec | None
    data: dict | None
    source_map: SourceMap
    diagnostics: list[Diagnostic] = field(default_factory=list)
    text_by_file: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.spec is not None and not any(d.is_error for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def check_file(path: str | Path, overrides: list[str] | tuple[str, ...] = (), check_absolute: bool = False) -> CheckResult:
    """Load, override, validate and rule-check one spec file. `check_absolute`: an absolute
    `model.init_from` must exist here (`specc launch`; validate and plan leave it to the cluster)."""
    loaded: Loaded = load_file(Path(path), str(path))
    diagnostics = list(loaded.diagnostics)
    if loaded.data is None:
        return CheckResult(None, None, loaded.source_map, diagnostics, loaded.text_by_file)
    diagnostics.extend(apply_overrides(loaded.data, loaded.source_map, list(overrides)))
    # model.init_from completes the model (and tokenizer) from a Hugging Face directory first
    init_from = apply_init_from(loaded.data, loaded.source_map, Path(path).resolve().parent, check_absolute)
    diagnostics.extend(init_from)
    # cluster.catalog adds accelerators before the schema and the rules look any up
    found_in_catalog, catalog_text = apply_user_catalog(loaded.data, loaded.source_map, Path(path).resolve().parent)
    diagnostics.extend(found_in_catalog)
    loaded.text_by_file.update(catalog_text)
    spec, found = check_data(loaded.data, loaded.source_map)
    if any(d.is_error for d in found_in_catalog):  # its accelerators are unknown because the file is wrong
        found = [d for d in found if d.code != "R140"]
    diagnostics.extend(d for d in found if not suppresses(d, init_from))
    if any(d.is_error for d in diagnostics):
        spec = None
    return CheckResult(spec, loaded.data, loaded.source_map, diagnostics, loaded.text_by_file)


def check_data(data: dict, source_map: SourceMap) -> tuple[Spec | None, list[Diagnostic]]:
    """Validate plain data against the spec models and run every applicable rule."""
    try:
        spec = Spec.model_validate(data)
        return spec, run_rules(spec, set(Spec.model_fields), source_map)
    except ValidationError as error:
        diagnostics = diagnostics_from_validation(error, data, source_map)
        broken = {e["loc"][0] for e in error.errors() if e["loc"]}
    sections = _valid_sections(data, broken)
    partial = Spec.model_construct(**sections)
    diagnostics.extend(run_rules(partial, set(sections), source_map))
    return None, diagnostics


@cache
def _section_adapter(name: str) -> TypeAdapter:
    info = Spec.model_fields[name]
    annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(annotation)


def _valid_sections(data: dict, broken: set) -> dict:
    """Sections that validate on their own (given or defaulted), by name."""
    sections = {}
    for name, info in Spec.model_fields.items():
        if name in broken:
            continue
        if name not in data:
            if not info.is_required():
                sections[name] = info.get_default(call_default_factory=True)
            continue
        try:
            sections[name] = _section_adapter(name).validate_python(data[name])
        except ValidationError:
            continue
    return sections


def run_rules(spec: Spec, available: set[str], source_map: SourceMap) -> list[Diagnostic]:
    """Run each rule whose sections are all available; locate each finding."""
    diagnostics = []
    for rule in RULES:
        if not set(rule.needs) <= available:
            continue
        for finding in rule.check(spec):
            position = source_map.value_at(finding.path)
            diagnostics.append(Diagnostic(finding.severity, rule.code, finding.message, position,
                                          format_path(finding.path), hint=finding.hint))
    return diagnostics
