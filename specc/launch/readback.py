"""Every file specc reads back is checked before it is trusted: plan.json, launch.json, a
bundle's manifest.json and its stages' config.json.

Why: these files are written by specc but live on disk between commands, where people edit,
truncate and copy them. Read unchecked, a hand-edited plan.json without `layout` was a
KeyError traceback, a micro-batch that does not divide the batch was launched as written, a
truncated launch.json broke `specc status` and `specc cancel`, and a stray file in `stages/`
was taken for a stage. Each reader here parses the file (bounded in size, no special files, no
NaN/Infinity), checks its shape against a schema (pydantic, strict: `"8"` and `true` are not
counts) and its arithmetic, and raises `ReadbackError` with one line naming the file, the key
and what is wrong (codes B001-B019). Torch-free.

Codes:
  B001 the file cannot be read (missing, a directory or special file, too large, not UTF-8)
  B002 not JSON (with line and column), or a non-finite number
  B003 a key is missing or has the wrong type or value (the schema)
  B004 the plan's layout does not multiply out (degrees vs devices, batch vs dp x micro_batch x grad_accum)
  B005 the plan's layout breaks a layout rule of the spec it launches (`specc.spec.parallel_dims`)
  B006 the plan was written by another plan schema version
  B007 a manifest entry is not a plain relative path inside the bundle
  B008 a stage directory's config.json names another stage
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BYTES = 64 * 2**20
"""The largest file read back: a plan of the largest example is ~60 KB, a manifest ~2 KB."""

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
JOB_ID = Annotated[str, Field(pattern=r"^[0-9]+(_[0-9]+)?$")]
"""A Slurm job id (`123`, array task `123_4`) or a local job's pid: it reaches `scancel` and `kill`."""
STAGE_DIRNAME = re.compile(r"^([0-9]{2})-([a-z0-9][a-z0-9._-]{0,62})$")
"""`NN-<stage>`, as `specc.emit.stages.Stage.dirname` writes it."""


class ReadbackError(ValueError):
    """A file specc wrote earlier is unreadable or has the wrong shape (one line, exit 1)."""

    def __init__(self, code: str, path: Path | str, key: str, message: str, hint: str = ""):
        self.code, self.path, self.key = code, str(path), key
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{message} [{code}]" + (f"; {hint}" if hint else ""))


# --- reading -----------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def read_text(path: Path, hint: str = "") -> str:
    """The text of `path`: a regular file of at most MAX_BYTES, UTF-8."""
    try:
        return _read_bytes(path, hint).decode("utf-8")
    except UnicodeDecodeError:
        raise ReadbackError("B001", path, "", "is not UTF-8 text", hint) from None


def read_json(path: Path, hint: str = "") -> object:
    """The parsed JSON of `path`: a regular file of at most MAX_BYTES, UTF-8, finite numbers."""
    text = read_text(path, hint)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise ReadbackError("B002", path, "", f"not valid JSON at line {error.lineno} column {error.colno} "
                                              f"({error.msg}; truncated or edited?)", hint) from None
    except (ValueError, RecursionError) as error:
        raise ReadbackError("B002", path, "", f"not valid JSON ({error})", hint) from None


def _read_bytes(path: Path, hint: str) -> bytes:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ReadbackError("B001", path, "", "missing", hint) from None
    except OSError as error:
        raise ReadbackError("B001", path, "", f"cannot be read: {error.strerror}", hint) from None
    if not stat.S_ISREG(mode):
        raise ReadbackError("B001", path, "", "is not a regular file (a directory, FIFO or device)", hint)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ReadbackError("B001", path, "", f"cannot be read: {error.strerror}", hint) from None
    if len(raw) > MAX_BYTES:
        raise ReadbackError("B001", path, "", f"is larger than {MAX_BYTES // 2**20} MB", hint)
    return raw


def _key(location: tuple) -> str:
    """pydantic's error location as a key path: ("layout", "dp") -> `layout.dp`, indexes as `[i]`."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _validated(model: type[BaseModel], data: object, path: Path, hint: str, prefix: tuple = ()) -> BaseModel:
    """`data` (found at key `prefix` of the file) as `model`, strictly, or a ReadbackError naming
    the first wrong key."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        problems = error.errors()
        first = problems[0]
        if first["type"] in ("model_type", "dict_type", "list_type"):
            expected = "a JSON array" if first["type"] == "list_type" else "a JSON object"
            raise ReadbackError("B003", path, _key(prefix + tuple(first["loc"])),
                                f"expected {expected}, got {_json_type(first['input'])}", hint) from None
        shown = repr(first["input"]) if first["type"] != "missing" and not isinstance(first["input"], (dict, list)) \
            else ""
        message = first["msg"].lower() if first["type"] != "missing" else "missing"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ReadbackError("B003", path, _key(prefix + tuple(first["loc"])),
                            f"{message}{f', got {shown}' if shown else ''}{more}", hint) from None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class _Open(BaseModel):
    """Keys specc reads are checked; others (newer fields, notes) are kept."""

    model_config = ConfigDict(extra="allow")


# --- plan.json ---------------------------------------------------------------------------

PLAN_HINT = "re-plan the spec (`specc plan SPEC -o plan.json`) instead of editing the plan"
Positive = Annotated[int, Field(ge=1)]


class _PlanBatch(_Open):
    sequences: Positive
    seq_len: Positive


class _PlanSpecInfo(_Open):
    name: str
    sha256: SHA256
    path: str | None = None
    overrides: list[str] = []


class _PlanAlignment(_Open):
    stage: str
    type: str


def load_plan(path: Path, hint: str = PLAN_HINT) -> dict:
    """A plan.json as a dict, after checking the keys launch, emit and status read, and that its
    layout multiplies out (`layout_arithmetic`)."""
    from specc.plan.plan import SCHEMA_VERSION, Plan

    data = read_json(path, hint)
    if not isinstance(data, dict):
        raise ReadbackError("B003", path, "", f"a plan is a JSON object, got {type(data).__name__}", hint)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ReadbackError("B006", path, "schema_version", f"{data.get('schema_version')!r} is not "
                                                             f"{SCHEMA_VERSION}, the plan schema of this specc", hint)
    if "batch" not in data:
        raise ReadbackError("B003", path, "batch", "missing", hint)
    _validated(Plan, data, path, hint)
    _validated(_PlanSpecInfo, data["spec"], path, hint, ("spec",))
    _validated(_PlanBatch, data.get("batch"), path, hint, ("batch",))
    for index, entry in enumerate(data.get("alignment") or []):
        _validated(_PlanAlignment, entry, path, hint, ("alignment", index))
    for problem in layout_arithmetic(data):
        raise ReadbackError("B004", path, problem[0], problem[1], hint)
    return data


def layout_arithmetic(plan: dict) -> list[tuple[str, str]]:
    """(key, message) where the plan's own numbers disagree: dp x tp x pp x cp must be the
    device count, and dp x micro_batch x grad_accum the global batch (Narayanan et al. 2021,
    sec. 2: B = b x d x accumulation steps)."""
    layout, hardware, batch = plan["layout"], plan["hardware"], plan["batch"]
    if layout is None:  # no pretrain stage: nothing to multiply out
        return []
    problems = []
    for key in ("dp", "tp", "pp", "cp", "ep", "vpp", "micro_batch", "grad_accum"):
        if layout[key] < 1:
            problems.append((f"layout.{key}", f"{key} = {layout[key]} must be at least 1"))
    if problems:
        return problems
    devices = layout["dp"] * layout["tp"] * layout["pp"] * layout["cp"]
    if devices != hardware["count"]:
        problems.append(("layout", f"dp x tp x pp x cp = {layout['dp']} x {layout['tp']} x {layout['pp']} x "
                                   f"{layout['cp']} = {devices}, but hardware.count is {hardware['count']}"))
    sequences = layout["dp"] * layout["micro_batch"] * layout["grad_accum"]
    if sequences != batch["sequences"]:
        problems.append(("layout.micro_batch",
                         f"dp x micro_batch x grad_accum = {layout['dp']} x {layout['micro_batch']} x "
                         f"{layout['grad_accum']} = {sequences}, but the batch is {batch['sequences']} sequences"))
    return problems


def check_layout_against_spec(plan: dict, spec, path: Path) -> None:
    """A saved plan launches its `layout` on the spec it was made from: refuse a layout that
    breaks the rules validate and the runtime apply (`specc.spec.parallel_dims`), for example a
    layout edited by hand, or planned by a specc whose rules were looser."""
    from specc.emit.configs.pretrain import resolve_layout
    from specc.spec import parallel_dims
    from specc.spec.derived import total_devices

    devices = total_devices(spec.cluster)
    if plan["layout"] is None:  # no pretrain stage (the spec hash already matched)
        return
    if plan["hardware"]["count"] != devices:
        raise ReadbackError("B005", path, "hardware.count", f"{plan['hardware']['count']} devices, but the spec's "
                                                            f"cluster has {devices}", PLAN_HINT)
    try:
        parallel = resolve_layout(spec, plan["layout"])
    except ValidationError as error:
        first = error.errors()[0]
        raise ReadbackError("B005", path, f"layout.{_key(first['loc'])}", first["msg"].lower(), PLAN_HINT) from None
    except parallel_dims.LayoutError as error:
        raise ReadbackError("B005", path, "layout", str(error), PLAN_HINT) from None
    dims = parallel_dims.resolve(parallel, devices)
    problems = parallel_dims.layout_problems(spec.model, parallel, dims, spec.schedule.seq_len)
    problems += parallel_dims.expert_shard_problems(parallel, dims.dp)
    batch = spec.schedule.batch_sequences()
    if batch:
        problems += parallel_dims.batch_problems(batch, dims.dp, parallel.micro_batch)
    errors = [problem for problem in problems if problem.severity == "error"]
    if errors:
        problem = errors[0]
        key = "layout." + str(problem.path[-1]) if problem.path[0] == "parallel" and len(problem.path) > 1 \
            else "layout"
        raise ReadbackError("B005", path, key, f"{problem.message} ({problem.hint})", PLAN_HINT)


# --- manifest.json -----------------------------------------------------------------------

BUNDLE_HINT = "re-emit the bundle (`specc launch SPEC --dry-run --force`)"


class _Manifest(_Open):
    bundle: str
    files: dict[str, SHA256]
    schema_version: int
    specc_version: str
    spec_dir: str | None = None
    """Where the spec's relative paths resolved (bundles emitted before it was recorded lack it)."""


def load_manifest(path: Path) -> dict:
    """A bundle's manifest.json: its files (plain relative paths inside the bundle) and their sha256."""
    from specc.emit.bundle import SCHEMA_VERSION

    data = read_json(path, BUNDLE_HINT)
    _validated(_Manifest, data, path, BUNDLE_HINT)
    if data["schema_version"] != SCHEMA_VERSION:
        raise ReadbackError("B006", path, "schema_version", f"{data['schema_version']} is not {SCHEMA_VERSION}, "
                                                             "the bundle schema of this specc", BUNDLE_HINT)
    for relative in data["files"]:
        parts = relative.split("/")
        if relative.startswith("/") or "\\" in relative or any(part in ("", ".", "..") for part in parts):
            raise ReadbackError("B007", path, f"files[{relative!r}]", "is not a plain relative path inside the "
                                                                      "bundle", BUNDLE_HINT)
    return data


def stage_dirnames(manifest: dict) -> list[str]:
    """The bundle's stage directories, in order: those the manifest lists a config.json for."""
    names = {relative.split("/")[1] for relative in manifest["files"]
             if relative.startswith("stages/") and relative.count("/") == 2 and relative.endswith("/config.json")}
    return sorted(name for name in names if STAGE_DIRNAME.match(name))


def stray_stage_entries(bundle_dir: Path, manifest: dict) -> list[str]:
    """Entries of `stages/` that are not stages of this bundle (an editor's backup, a copied
    directory): they are never run or shown, only named in a note."""
    known = set(stage_dirnames(manifest))
    try:
        entries = sorted(entry.name for entry in (bundle_dir / "stages").iterdir())
    except OSError:
        return []
    return [f"stages/{name}" for name in entries if name not in known]


# --- stages/NN-name/config.json ----------------------------------------------------------


class _StageConfig(_Open):
    stage: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    run_dir: Annotated[str, Field(min_length=1)]
    params: dict


def load_stage_config(path: Path) -> dict:
    """A stage's config.json: its stage name (matching its directory), run_dir and params."""
    data = read_json(path, BUNDLE_HINT)
    _validated(_StageConfig, data, path, BUNDLE_HINT)
    match = STAGE_DIRNAME.match(path.parent.name)
    if match and match.group(2) != data["stage"]:
        raise ReadbackError("B008", path, "stage", f"{data['stage']!r}, but the directory is "
                                                   f"{path.parent.name}", BUNDLE_HINT)
    return data


# --- jobs/launch.json --------------------------------------------------------------------

RECORD_HINT = "it is rewritten by the next `specc launch BUNDLE`; cancel jobs still queued with scancel"


class _RecordStage(_Open):
    stage: str
    dirname: Annotated[str, Field(pattern=STAGE_DIRNAME.pattern)]
    state: Annotated[str, Field(min_length=1)]
    job_id: JOB_ID | None = None
    reason: str | None = None
    seconds: Annotated[float, Field(ge=0)] | None = None


class _Record(_Open):
    bundle: str
    executor: str
    folder: str
    stages: list[_RecordStage]


def load_launch_record(path: Path) -> dict:
    """The record of a bundle's last launch (`jobs/launch.json`)."""
    from specc.launch.launcher import EXECUTORS

    data = read_json(path, RECORD_HINT)
    _validated(_Record, data, path, RECORD_HINT)
    if data["executor"] not in EXECUTORS:
        raise ReadbackError("B003", path, "executor", f"{data['executor']!r} is not one of {', '.join(EXECUTORS)}",
                            RECORD_HINT)
    return data
