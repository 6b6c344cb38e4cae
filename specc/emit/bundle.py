"""The bundle: every file a run needs, content-hashed, written atomically.

Layout (the DESIGN contract):
    <out>/<name>-<hash12>/
      spec.resolved.yaml  plan.json  manifest.json  README.md  submit.sh
      stages/<NN>-<stage>/{config.json, run.sh, job.sbatch}

Determinism: files are built in memory from the spec, the plan and the templates only
(no clocks, no absolute paths of the bundle itself), so the same spec and specc version
give the same bytes. The directory name's hash covers every file and the version.

Atomicity: files go to a temporary sibling directory which is renamed into place, so a
kill mid-emit leaves at most a hidden `.tmp` directory, never a half-made bundle. An
existing bundle with the same name and identical files is reused (a relaunch); one that
differs is replaced only with `force`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from specc import __version__
from specc.catalog import load_catalog
from specc.emit.render import Raw, Renderer
from specc.emit.stages import EmitError, Stage, build_stages, run_dir_for
from specc.integrity import STORAGE_ERRNOS, free_space
from specc.plan.findings import severity_of
from specc.spec.root import Spec

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
STATE_DIR = "jobs"
"""Launch state (job ids, submitit logs) lives in `<bundle>/jobs/`, outside the manifest."""


@dataclass(frozen=True)
class Bundle:
    """An emitted bundle in memory: its directory name and files (relative path -> text)."""

    name: str
    files: dict[str, str]
    stages: list[Stage]
    spec_dir: str
    """The directory the spec's relative paths resolved against: recorded in the manifest so that
    relaunching the bundle can check its inputs again (`specc.launch.cli`)."""


def build_bundle(spec: Spec, plan: dict, spec_dir: str, target: str | None = None) -> Bundle:
    """Render every file of the bundle for `spec` and its `plan` (nothing is written)."""
    target = target or default_target(spec)
    renderer = Renderer(target)
    stages = build_stages(spec, plan, spec_dir)
    run_dir = run_dir_for(spec)
    setup = [_setup_line(line, index) for index, line in enumerate(spec.cluster.setup)]
    common = {"name": spec.name, "version": __version__, "target": target}
    files: dict[str, str] = {
        "spec.resolved.yaml": _resolved_yaml(spec),
        "plan.json": json.dumps(plan, indent=2, sort_keys=True) + "\n",
    }
    for stage in stages:
        base = f"stages/{stage.dirname}"
        files[f"{base}/config.json"] = json.dumps(stage.config_file(run_dir), indent=2, sort_keys=True) + "\n"
        paths = {"config": f"{base}/config.json", "script": f"{base}/run.sh", "sbatch": f"{base}/job.sbatch"}
        files[f"{base}/run.sh"] = renderer.render("run.sh.j2", stage=stage, setup=setup, **paths, **common)
        files[f"{base}/job.sbatch"] = renderer.render("job.sbatch.j2", stage=stage, directives=stage.directives,
                                                      **paths, **common)
    summaries = [_stage_summary(stage) for stage in stages]
    files["submit.sh"] = renderer.render("submit.sh.j2", stages=summaries, **common)
    # The name hashes every file but README.md, which shows the name and derives from the rest, and
    # the spec directory the manifest records (the same files emitted from elsewhere are another bundle).
    name = f"{spec.name}-{_digest(files, spec_dir)[:12]}"
    files["README.md"] = renderer.render(
        "README.md.j2", bundle=name, description=spec.description or "(no description)",
        spec_sha256=plan.get("spec", {}).get("sha256", "n/a"), stages=summaries, run_dir=run_dir,
        plan_rows=_plan_rows(plan), cost=_cost_text(spec, plan), executor=spec.cluster.executor, **common)
    return Bundle(name, dict(sorted(files.items())), stages, spec_dir)


def default_target(spec: Spec) -> str:
    """The template target: `tpu` on TPU slices (one process per host, gcloud or Slurm), else the
    executor (`local`, `slurm`); templates missing for a target come from `default/`."""
    accelerator = load_catalog().get(spec.cluster.accelerator)
    return "tpu" if accelerator is not None and accelerator.kind == "tpu" else spec.cluster.executor


def _digest(files: dict[str, str], spec_dir: str) -> str:
    listing = {path: sha256_text(text) for path, text in sorted(files.items())}
    return sha256_text(json.dumps({"files": listing, "spec_dir": spec_dir, "specc_version": __version__},
                                  sort_keys=True))


def sha256_text(text: str) -> str:
    """sha256 hex digest of a text file's UTF-8 bytes (the manifest's unit)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _setup_line(line: str, index: int) -> Raw:
    """A `cluster.setup` line as a command whose every word is quoted: `module load cuda/12.4`
    runs, while `$(...)`, `;` and backticks in it stay literal arguments."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise EmitError(f"cluster.setup[{index}]: cannot split {line!r} into words: {error}") from None
    if not words:
        raise EmitError(f"cluster.setup[{index}]: empty command")
    return Raw(" ".join(shlex.quote(word) for word in words))


def _resolved_yaml(spec: Spec) -> str:
    header = f"# The spec with every default resolved, as specc {__version__} read it.\n"
    body = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
    return header + body


def _stage_summary(stage: Stage) -> dict:
    return {"index": stage.index, "name": stage.name, "nodes": stage.nodes,
            "procs_per_node": stage.procs_per_node,
            "time": stage.directives["time"], "sbatch": f"stages/{stage.dirname}/job.sbatch"}


def _plan_rows(plan: dict) -> list[tuple[str, str]]:
    """The headline figures of the plan, for people (plan.json holds all of them)."""
    model, hardware = plan.get("model") or {}, plan.get("hardware") or {}
    if plan.get("layout") is None and "layout" in plan:
        rows = [("parameters", _count(model.get("params"))),
                ("hardware", f"{hardware.get('count', '?')} x {hardware.get('accelerator', '?')}"),
                ("pretraining", "none: no pretrain stage (model.init_from without a corpus)")]
        rows.extend((severity_of(w), f"{w.get('code')}: {w.get('message')}") for w in plan.get("warnings", []))
        return rows
    layout, time, memory = plan.get("layout") or {}, plan.get("time") or {}, plan.get("memory") or {}
    rows = [
        ("parameters", _count(model.get("params"))),
        ("hardware", f"{hardware.get('count', '?')} x {hardware.get('accelerator', '?')}"),
        ("layout", ", ".join(f"{key}={layout[key]}" for key in ("dp", "tp", "pp", "cp", "ep", "micro_batch",
                                                                "grad_accum") if key in layout)),
        ("memory per device", f"{memory.get('per_device_gib', '?')} GiB (fits: {memory.get('fits', '?')})"),
        ("step time", f"{time.get('step_s', '?')} s, {time.get('tokens_per_s', '?')} tokens/s, "
                      f"MFU {time.get('mfu', '?')}"),
        ("training time", f"{time.get('train_days', '?')} days, {time.get('device_hours', '?')} device-hours"),
    ]
    rows.extend((severity_of(w), f"{w.get('code')}: {w.get('message')}") for w in plan.get("warnings", []))
    return rows


def _count(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix} ({int(value):,})"
    return str(int(value))


def _cost_text(spec: Spec, plan: dict) -> str:
    if plan.get("time") is None and "time" in plan:
        return "No pretraining is charged (no pretrain stage); the plan has no time model for alignment stages."
    hours = (plan.get("time") or {}).get("device_hours")
    rate = spec.cluster.cost_per_device_hour
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if rate is None and accelerator is not None:
        rate = accelerator.cost_per_device_hour
    if not isinstance(hours, (int, float)) or rate is None:
        return "Unknown (the plan has no device-hours or the accelerator no price)."
    return (f"About ${_money(hours * rate)} for pretraining: {_amount(hours)} device-hours x ${rate:.2f} "
            f"per device-hour (catalog list price unless the spec sets cluster.cost_per_device_hour).")


def _money(amount: float) -> str:
    return f"{amount:,.2f}" if amount >= 1 else f"{amount:.2g}"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


# --- writing -----------------------------------------------------------------------------


def manifest_text(bundle: Bundle) -> str:
    files = {path: sha256_text(text) for path, text in bundle.files.items()}
    manifest = {"bundle": bundle.name, "files": files, "schema_version": SCHEMA_VERSION,
                "spec_dir": bundle.spec_dir, "specc_version": __version__}
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def all_files(bundle: Bundle) -> dict[str, str]:
    """The bundle's files including manifest.json."""
    return {**bundle.files, MANIFEST: manifest_text(bundle)}


def write_bundle(bundle: Bundle, out: Path, force: bool = False) -> tuple[Path, bool]:
    """Write the bundle under `out`; returns (its directory, whether anything was written).

    An identical existing bundle is kept as is (relaunching it skips finished stages);
    a different one is an error unless `force`.
    """
    final = out / bundle.name
    files = all_files(bundle)
    if final.exists() and not force:
        if _matches(final, files):
            return final, False
        raise EmitError(f"{final} exists and differs from what this spec emits; "
                        f"pass --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(dir=out, prefix=f".{bundle.name}.", suffix=".tmp"))
    except OSError as error:
        raise EmitError(f"cannot write a bundle under {out}: {error.strerror} ({free_space(out)})") from None
    try:
        for relative, text in files.items():
            _write_file(temporary / relative, text)
        _replace(temporary, final)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)  # no half-written bundle is left behind
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            raise EmitError(f"cannot write the bundle {final}: {error.strerror} ({free_space(out)} on its "
                            "filesystem); nothing was written: free space or pick another --out") from None
        raise
    return final, True


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o755 if path.suffix in (".sh", ".sbatch") else 0o644)


def _replace(temporary: Path, final: Path) -> None:
    """Rename the finished bundle into place; an old one (with --force) is moved aside first
    and deleted only after the new one is in place."""
    os.chmod(temporary, 0o755)
    if not final.exists():
        os.rename(temporary, final)
        return
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, aside)
    os.rename(temporary, final)
    shutil.rmtree(aside, ignore_errors=True)


def _matches(directory: Path, files: dict[str, str]) -> bool:
    """True if `directory` holds exactly `files` (launch state under jobs/ aside)."""
    present = {str(p.relative_to(directory)) for p in directory.rglob("*")
               if p.is_file() and p.relative_to(directory).parts[0] != STATE_DIR}
    if present != set(files):
        return False
    return all((directory / relative).read_text() == text for relative, text in files.items())
