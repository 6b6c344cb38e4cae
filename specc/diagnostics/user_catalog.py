"""`cluster.catalog`: load the user's catalog file, report its mistakes where they are, register it.

Runs in `check_file` before the spec's schema and rules, so every rule, the planner, the search,
`specc calibrate` (which checks each spec it plans) and the bundle see the file's accelerators as
catalog entries (`specc.catalog.use_user_catalog`). Diagnostics about the file's content are
located in the file itself (`my-gpus.yaml:4:17: error[S006] devices[0].memory_gb: ...`); a missing
file or an id the built-in catalog already has is R300 / R301 at the spec's `cluster.catalog`
or at the entry's `id`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError

from specc.catalog import accelerator_from_entry, builtin_catalog, use_user_catalog
from specc.diagnostics.diagnostic import Diagnostic, format_path
from specc.diagnostics.schema_errors import diagnostics_from_validation
from specc.spec.catalog_file import CatalogFile
from specc.spec.loader import SourceMap, load_file


def apply_user_catalog(data: dict, source_map: SourceMap, spec_dir: Path) -> tuple[list[Diagnostic], dict[str, str]]:
    """Load `cluster.catalog` (relative to `spec_dir`) and register its accelerators; returns the
    diagnostics and the file's text (for context lines). Without the key, the built-in catalog only."""
    use_user_catalog({})
    cluster = data.get("cluster") if isinstance(data, dict) else None
    name = cluster.get("catalog") if isinstance(cluster, dict) else None
    if not isinstance(name, str) or not name:
        return [], {}  # absent, or a wrong type the schema reports
    where = source_map.value_at(("cluster", "catalog"))
    path = spec_dir / name
    if not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "not found"
        return [Diagnostic("error", "R300", f"catalog file {name!r} {why}", where, "cluster.catalog",
                           hint="paths in cluster.catalog are relative to the spec file")], {}
    shown = str(Path(where.file).parent / name) if where.file else name
    loaded = load_file(path, shown)
    if loaded.data is None:
        return [_as_catalog(d) for d in loaded.diagnostics], loaded.text_by_file
    try:
        catalog = CatalogFile.model_validate(loaded.data)
    except ValidationError as error:
        return list(loaded.diagnostics) + diagnostics_from_validation(error, loaded.data, loaded.source_map), loaded.text_by_file
    diagnostics = list(loaded.diagnostics) + _id_problems(catalog, loaded.source_map)
    if not any(d.is_error for d in diagnostics):
        use_user_catalog({entry.id: accelerator_from_entry(entry.catalog_dict()) for entry in catalog.devices})
    return diagnostics, loaded.text_by_file


CATALOG_HINT = "a catalog file holds `devices:`, a list of entries shaped like those of specc/catalog/accelerators.json"


def _as_catalog(diagnostic: Diagnostic) -> Diagnostic:
    """The loader words an empty, non-mapping or non-UTF-8 file as a spec; this file is a catalog."""
    if diagnostic.code == "Y004":
        message = diagnostic.message.replace("the spec is empty", "the catalog file is empty").replace(
            "the spec must be a mapping of sections", "the catalog file must be a mapping with `devices:`")
        return replace(diagnostic, message=message, hint=CATALOG_HINT)
    if diagnostic.code == "Y008":
        return replace(diagnostic, message="the catalog file is not valid UTF-8 text", hint="save the catalog as UTF-8 YAML or JSON")
    return diagnostic


def _id_problems(catalog: CatalogFile, source_map: SourceMap) -> list[Diagnostic]:
    """R301: an id already in the built-in catalog, or twice in the file."""
    problems, seen = [], set()
    builtin = builtin_catalog()
    for index, entry in enumerate(catalog.devices):
        key = ("devices", index, "id")
        if entry.id in builtin:
            problems.append(Diagnostic("error", "R301", f"accelerator id {entry.id!r} is already in specc's catalog",
                                       source_map.value_at(key), format_path(key),
                                       hint="choose a new id, or change the built-in entry with cluster.accelerator_overrides"))
        elif entry.id in seen:
            problems.append(Diagnostic("error", "R301", f"accelerator id {entry.id!r} appears twice in this file",
                                       source_map.value_at(key), format_path(key), hint="give each entry its own id"))
        seen.add(entry.id)
    return problems
