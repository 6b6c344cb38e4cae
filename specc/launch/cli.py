"""`specc launch TARGET`: validate -> plan (shown; refused when a stage does not fit, unless
`--allow-unfit`) -> emit the bundle (after stating how its stages differ from the plan, if they
do) -> submit its stages. See `specc.launch.planned`.

TARGET is a spec (`specs/tiny.yaml`), a saved plan (`plan.json` from `specc plan -o`,
launched exactly as reviewed: the spec must still hash to the plan's `spec.sha256`), or an
emitted bundle directory. Kept free of heavy imports: the parser is built on every
`specc` invocation, and `--dry-run` never imports torch or submitit.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEFAULT_OUT = Path("bundles")
MAX_CHANGES_SHOWN = 8


class LaunchUsageError(Exception):
    """Bad input to `specc launch` (reported in one line, exit 1)."""


def add_parsers(commands) -> None:
    """Register `launch`, `status` and `cancel` on the `specc` sub-command parser."""
    _add_launch(commands)
    status = commands.add_parser("status", help="stages, job ids, states, progress and metrics of a launched bundle")
    status.add_argument("bundle", type=Path, help="bundle directory")
    status.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    cancel = commands.add_parser("cancel", help="cancel the running and queued jobs of a launched bundle")
    cancel.add_argument("bundle", type=Path, help="bundle directory")


def run_command(args: argparse.Namespace) -> int:
    handler = {"launch": cmd_launch, "status": cmd_status, "cancel": cmd_cancel}[args.command]
    return handler(args)


def _add_launch(commands) -> None:
    launch = commands.add_parser("launch", help="emit the run's bundle and run its stages (local or Slurm)")
    launch.add_argument("target", type=Path, help="a spec file, a saved plan.json, or a bundle directory")
    launch.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value: `schedule.steps=50`, `+a.b=c` (add), `~a.b` (delete)")
    launch.add_argument("--executor", choices=("local", "slurm"),
                        help="where to run (default: the spec's cluster.executor); same as --set cluster.executor=...")
    launch.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"directory of bundles and run outputs (default: {DEFAULT_OUT}/)")
    launch.add_argument("--spec", type=Path, help="with a plan.json: the spec it was planned from")
    launch.add_argument("--force", action="store_true", help="replace an existing bundle that differs")
    launch.add_argument("--dry-run", action="store_true", help="emit the bundle and stop; submit nothing")
    launch.add_argument("--allow-unfit", action="store_true",
                        help="launch even when the plan has an error-level finding (P201/P206/P302: a stage's "
                             "predicted memory does not fit its devices)")
    launch.add_argument("--no-wait", dest="wait", action="store_false",
                        help="slurm: return after submitting (see `specc status BUNDLE`)")
    launch.add_argument("--wait-for-lock", dest="lock_wait_s", type=float, nargs="?", const=float("inf"),
                        default=0.0, metavar="SECONDS",
                        help="when another launch of this bundle holds its lock, wait for it to finish (at most "
                             "SECONDS, default forever) instead of refusing")
    launch.add_argument("--no-path-checks", dest="path_checks", action="store_false",
                        help="skip the pre-flight checks that every input file the stages read exists here "
                             "(R200-R207, R280-R281); for paths that exist only on the cluster")


def cmd_launch(args: argparse.Namespace) -> int:
    """Exit 0 when every stage succeeded (or was emitted, with --dry-run), 1 otherwise."""
    from specc.emit.bundle import EmitError
    from specc.launch.launcher import LaunchError
    from specc.integrity import StorageError
    from specc.launch.readback import ReadbackError

    if args.lock_wait_s < 0:
        print("specc launch: error: --wait-for-lock takes a number of seconds >= 0", file=sys.stderr)
        return 1
    try:
        bundle_dir = _bundle_for(args)
        if bundle_dir is None:
            return 1
        if args.dry_run:
            return 0
        return _launch(bundle_dir, args)
    except (LaunchUsageError, EmitError, LaunchError, StorageError, ReadbackError) as error:
        print(f"specc launch: error: {error}", file=sys.stderr)
        return 1


def _bundle_for(args: argparse.Namespace) -> Path | None:
    """The bundle directory to launch, emitting it first unless TARGET is one."""
    target: Path = args.target
    if target.is_dir():
        return _existing_bundle(target, args)
    if not target.is_file():
        raise LaunchUsageError(f"{target}: no such file or directory")
    if target.suffix == ".json":
        return _emit_from_plan(target, args)
    return _emit_from_spec(target, args, saved_plan=None)


def _existing_bundle(directory: Path, args: argparse.Namespace) -> Path | None:
    """An emitted bundle, held to its own plan.json like a spec is: shown, refused when it does not
    fit (unless --allow-unfit), and compared with the stage configs it will run."""
    from specc.diagnostics.diagnostic import Position
    from specc.launch.launcher import read_stages, verify_manifest
    from specc.launch.planned import StageRun
    from specc.launch.readback import load_plan

    _refuse_spec_flags(directory, args)
    manifest = verify_manifest(directory)
    _note_strays(directory, manifest)
    if args.path_checks and not _inputs_still_present(directory, manifest):
        print(f"{directory}: not launched (pre-flight: input files its stages read are missing here; pass "
              "--no-path-checks if they exist only on the cluster)", file=sys.stderr)
        return None
    plan_file = directory / "plan.json"
    plan = load_plan(plan_file, hint="re-emit the bundle from its spec")
    if not _honour_plan(plan, lambda path: Position(str(plan_file)), "specc plan SPEC", args):
        print(f"{directory}: not launched", file=sys.stderr)
        return None
    _print_differences(plan, [StageRun(stage.name, stage.config.get("params", {})) for stage in read_stages(directory)])
    print(f"bundle: {directory} (existing, verified against its manifest)")
    return directory


def _inputs_still_present(directory: Path, manifest: dict) -> bool:
    """Pre-flight for a relaunch: the bundle's resolved spec checked against the filesystem as at
    emit time (relative paths against the spec directory the manifest records), since a corpus or
    a model directory may have moved since. Findings are located in the bundle's spec.resolved.yaml.
    Bundles that predate the recorded directory are launched unchecked, with a note."""
    from specc.diagnostics.check import check_data
    from specc.diagnostics.diagnostic import render_text
    from specc.diagnostics.preflight import preflight
    from specc.spec.loader import parse_yaml, read_text

    spec_dir = manifest.get("spec_dir")
    if not spec_dir:
        print(f"note: {directory} does not record its spec directory (emitted by an older specc): its input "
              "files are not checked before launch", file=sys.stderr)
        return True
    resolved = directory / "spec.resolved.yaml"
    text, unreadable = read_text(resolved, str(resolved))
    loaded = parse_yaml(text, str(resolved)) if unreadable is None else None
    if loaded is None or loaded.data is None:
        print(render_text([unreadable] if unreadable else loaded.diagnostics), file=sys.stderr)
        return False
    loaded.data.pop("extends", None)  # already applied: the resolved spec is the composed one
    spec, diagnostics = check_data(loaded.data, loaded.source_map)
    if spec is None:  # the manifest matched, so this is a spec this specc no longer accepts
        print(render_text([d for d in diagnostics if d.severity == "error"]), file=sys.stderr)
        return False
    problems = preflight(spec, loaded.source_map, Path(spec_dir) / resolved.name, check_absolute=True)
    if problems:
        print(render_text(problems), file=sys.stderr)
    return not any(problem.severity == "error" for problem in problems)


def _refuse_spec_flags(bundle: Path, args: argparse.Namespace) -> None:
    """A bundle launches as emitted: flags that would change what it runs are errors, not ignored."""
    given = [flag for flag, value in (("--set", args.overrides), ("--spec", args.spec), ("--force", args.force))
             if value]
    if given:
        raise LaunchUsageError(f"{bundle} is an emitted bundle: it launches exactly as emitted, so "
                               f"{', '.join(given)} cannot apply (those flags apply to specs and saved plans); "
                               f"launch the spec with them to emit a new bundle")


def _note_strays(bundle: Path, manifest: dict) -> None:
    """Name what sits in `stages/` without being a stage of the bundle (never run, never shown)."""
    from specc.launch.readback import stray_stage_entries

    for entry in stray_stage_entries(bundle, manifest):
        print(f"note: {bundle}/{entry} is not a stage of this bundle (not in its manifest.json); ignored",
              file=sys.stderr)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides, plus `--executor` as the override it stands for."""
    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f"cluster.executor={args.executor}")
    return overrides


def _emit_from_plan(path: Path, args: argparse.Namespace) -> Path | None:
    """A plan inside a bundle launches that bundle; a standalone plan is emitted as saved."""
    from specc.launch.readback import load_plan

    if _in_bundle(path):
        return _existing_bundle(path.parent, args)
    plan = load_plan(path)
    spec_info = plan["spec"]
    spec_path = args.spec or (Path(spec_info["path"]) if spec_info.get("path") else None)
    if spec_path is None:
        raise LaunchUsageError(f"{path}: pass --spec SPEC, the spec this plan was made from")
    recorded = list(spec_info.get("overrides", []))
    if args.overrides:
        raise LaunchUsageError(
            f"{path} is a saved plan: it launches exactly as reviewed, so --set {' --set '.join(args.overrides)} "
            f"cannot change it\n  hint: re-plan with the override "
            f"(`{_plan_command(spec_path, recorded + args.overrides, path)}`) and launch the new plan, or launch "
            f"the spec itself with --set")
    args.overrides = recorded
    return _emit_from_spec(spec_path, args, saved_plan=plan)


def _in_bundle(path: Path) -> bool:
    """A plan.json inside an emitted bundle (launching it launches the bundle)."""
    return path.suffix == ".json" and (path.parent / "manifest.json").is_file()


def _emit_from_spec(path: Path, args: argparse.Namespace, saved_plan: dict | None) -> Path | None:
    from specc.diagnostics.check import check_file
    from specc.diagnostics.diagnostic import render_text
    from specc.emit.bundle import build_bundle, write_bundle
    from specc.launch.planned import emitted_stage_runs

    if args.spec and saved_plan is None:
        raise LaunchUsageError(f"--spec names the spec of a saved plan.json; {path} is itself a spec")
    overrides = _overrides(args)
    result = check_file(path, overrides, check_absolute=args.path_checks)
    valid = result.valid
    if valid and args.path_checks:
        from specc.diagnostics.preflight import preflight

        result.diagnostics.extend(preflight(result.spec, result.source_map, path, check_absolute=True))
    if result.diagnostics:
        print(render_text(result.diagnostics), file=sys.stderr)
    if not result.valid:
        print(f"{path}: invalid; nothing emitted", file=sys.stderr)
        if valid:
            print("  (pre-flight: input files the stages would read are missing here; pass --no-path-checks "
                  "if they exist only on the cluster)", file=sys.stderr)
        return None
    plan = _plan(result.spec, overrides, saved_plan, path, args.target)
    if not _honour_plan(plan, result.source_map.key_at, _plan_command(path, overrides), args):
        print(f"{path}: not launched; nothing emitted", file=sys.stderr)
        return None
    bundle = build_bundle(result.spec, plan, str(path.resolve().parent))
    _print_differences(plan, emitted_stage_runs(bundle.stages))
    directory, written = write_bundle(bundle, args.out, force=args.force)
    print(f"bundle: {directory} ({'written' if written else 'unchanged, reused'})")
    return directory


def _plan_command(spec: Path, overrides: list[str], output: Path | None = None) -> str:
    """`specc plan SPEC --set ... [-o OUTPUT]`, shell-quoted (shown in hints)."""
    words = ["specc", "plan", str(spec), *(word for override in overrides for word in ("--set", override))]
    return shlex.join(words + (["-o", str(output)] if output else []))


def _plan(spec, overrides: list[str], saved_plan: dict | None, path: Path, plan_path: Path) -> dict:
    from specc.plan import build_plan, plan_json
    from specc.plan.plan import spec_sha256

    if saved_plan is None:
        return json.loads(plan_json(build_plan(spec, overrides=overrides)))
    from specc.launch.readback import check_layout_against_spec

    if spec_sha256(spec) != saved_plan["spec"].get("sha256"):
        raise LaunchUsageError(_mismatch(path, spec, overrides, saved_plan, plan_path))
    check_layout_against_spec(saved_plan, spec, plan_path)
    return saved_plan


def _mismatch(path: Path, spec, overrides: list[str], saved_plan: dict, plan_path: Path) -> str:
    """Why a saved plan cannot launch this spec: the hashes, and what planning the spec now
    would change (nothing is launched either way: the plan reviewed is not the plan that would run)."""
    from specc.plan import build_plan, plan_json
    from specc.plan.diff import diff_plans
    from specc.plan.plan import spec_sha256

    replanned = json.loads(plan_json(build_plan(spec, overrides=overrides)))
    changes = diff_plans(saved_plan, replanned)
    applied = f" with {', '.join(overrides)}" if overrides else ""
    lines = [f"{path}{applied} no longer matches the saved plan: its resolved spec hashes to "
             f"{spec_sha256(spec)[:12]}, the plan was made from {str(saved_plan['spec'].get('sha256'))[:12]}"]
    if changes:
        lines.append(f"  planning it now changes {len(changes)} figure(s):")
        lines.extend(f"  {change.text()}" for change in changes[:MAX_CHANGES_SHOWN])
        if len(changes) > MAX_CHANGES_SHOWN:
            lines.append(f"    ... and {len(changes) - MAX_CHANGES_SHOWN} more (`specc plan {path} --against PLAN`)")
    else:
        lines.append("  planning it now gives the same layout, memory, time and cost, but what runs would differ")
    lines.append(f"  hint: review and save the new plan (`{_plan_command(path, overrides, plan_path)}`) and launch "
                 f"that, or launch the spec itself")
    return "\n".join(lines)


def _honour_plan(plan: dict, locate, replan: str, args: argparse.Namespace) -> bool:
    """Show the plan (stdout), then refuse it when it has error-level findings unless
    --allow-unfit (`replan`: the command that plans the spec again, for hints). True when the
    launch may go on."""
    from specc.diagnostics.diagnostic import render_text
    from specc.launch.planned import refusal
    from specc.plan.render import render_summary

    print(render_summary(plan))
    errors = refusal(plan, locate, replan)
    if not errors:
        return True
    print(render_text(errors), file=sys.stderr)
    codes = ", ".join(sorted({d.code for d in errors}))
    if not args.allow_unfit:
        print(f"specc launch: error: refusing to launch: the plan predicts that a stage does not fit in memory "
              f"({codes})", file=sys.stderr)
        return False
    print(f"specc launch: --allow-unfit: going on despite {len(errors)} error-level plan finding(s) ({codes}); "
          f"expect the job to run out of memory", file=sys.stderr)
    return True


def _print_differences(plan: dict, stages) -> None:
    """Every setting a stage runs differently from the plan (stdout, before anything is written)."""
    from specc.launch.planned import differences

    found = differences(plan, stages)
    if not found:
        print("what runs: the stages' configs match the plan (layout, batch, lengths, precision, devices)")
        return
    print(f"what runs differs from the plan in {len(found)} setting(s); the plan's figures are for the planned ones:")
    for difference in found:
        print(f"  ~ {difference.text()}")


def _launch(bundle_dir: Path, args: argparse.Namespace) -> int:
    import yaml

    from specc.launch.launcher import launch

    target = yaml.safe_load((bundle_dir / "spec.resolved.yaml").read_text())["cluster"]["executor"]
    if args.executor and args.executor != target and (args.target.is_dir() or _in_bundle(args.target)):
        raise LaunchUsageError(f"{bundle_dir} was emitted for the {target} executor; emit from the spec "
                               f"with --executor {args.executor}")
    from specc.launch.progress import LiveProgress

    record = launch(bundle_dir, target, wait=args.wait, lock_wait_s=args.lock_wait_s, echo=LiveProgress(bundle_dir))
    if args.wait or target == "local":
        _print_summary(bundle_dir)
    return 0 if record.ok else 1


def _print_summary(bundle_dir: Path) -> None:
    """After a run that was waited for: each stage's state and last metrics, and where results are."""
    from specc.launch.launcher import read_stages
    from specc.launch.readback import load_plan
    from specc.launch.progress import eval_table
    from specc.launch.status import render_status, stage_status
    from specc.report.cli import write_run_report

    predicted = (load_plan(bundle_dir / "plan.json").get("time") or {}).get("step_s")
    print()
    print(render_status(bundle_dir, stage_status(bundle_dir), predicted))
    table = eval_table(bundle_dir)
    for stage in read_stages(bundle_dir):
        results = stage.outputs(bundle_dir) / "results.md"
        if stage.name == "eval" and results.exists():
            print(f"\nevaluation results ({results}):")
            print(table or "  (none)")
    print(f"\nreport: {write_run_report(bundle_dir)} (open it in a browser)")
    events = read_stages(bundle_dir)[0].outputs(bundle_dir).parent / "tensorboard"
    if events.is_dir():
        print(f"TensorBoard: tensorboard --logdir {events}")


def cmd_status(args: argparse.Namespace) -> int:
    from specc.launch.launcher import LaunchError
    from specc.launch.readback import ReadbackError, load_manifest, load_plan
    from specc.launch.status import render_status, stage_status

    try:
        _require_bundle(args.bundle)
        _note_strays(args.bundle, load_manifest(args.bundle / "manifest.json"))
        rows = stage_status(args.bundle)
        plan = load_plan(args.bundle / "plan.json", hint="re-emit the bundle from its spec")
    except (LaunchUsageError, LaunchError, ReadbackError) as error:
        print(f"specc status: error: {error}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps({"bundle": args.bundle.name, "stages": rows}, indent=2, sort_keys=True))
        return 0
    print(render_status(args.bundle, rows, (plan.get("time") or {}).get("step_s")))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from specc.launch.launcher import LaunchError
    from specc.launch.readback import ReadbackError
    from specc.launch.status import cancel

    try:
        _require_bundle(args.bundle)
        cancelled = cancel(args.bundle)
    except (LaunchUsageError, LaunchError, ReadbackError) as error:
        print(f"specc cancel: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(cancelled) if cancelled else "nothing to cancel")
    return 0


def _require_bundle(path: Path) -> None:
    if not (path / "manifest.json").is_file():
        raise LaunchUsageError(f"{path}: not a bundle directory (no manifest.json)")
