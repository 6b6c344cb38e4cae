"""The `specc` command line: validate, schema, rules, catalog, plan, calibrate, launch, status, cancel.

Exit codes (dbt's convention): 0 success, 1 the user's input is wrong, 2 an internal
error. User mistakes never print a traceback; internal errors do, to stderr, with a
request to report them.

This module must stay light: `specc validate` and `specc plan` never import torch.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from specc import __version__

EXIT_OK, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2


class UsageError(Exception):
    """A wrong flag or argument: reported in one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 by default; a bad flag is user input
        raise UsageError(message)


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value: `model.num_layers=48`, `+a.b=c` (add), `~a.b` (delete)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="specc", description="Compile one YAML spec into a planned, launchable LLM training run.")
    parser.add_argument("--version", action="version", version=f"specc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    validate = commands.add_parser("validate", help="check specs and report every problem at file:line:col")
    validate.add_argument("specs", nargs="+", type=Path, help="spec files")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    validate.add_argument("--no-path-checks", dest="path_checks", action="store_false",
                          help="skip the pre-flight checks that input files relative to the spec exist (R200-R207, R280-R281)")
    _add_spec_arguments(validate)

    schema = commands.add_parser("schema", help="write the spec's JSON Schema (for editor completion)")
    schema.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    rules = commands.add_parser("rules", help="list the cross-field rules with their codes and examples")
    rules.add_argument("code", nargs="?", help="show one rule")

    catalog = commands.add_parser("catalog", help="list the accelerator ids a spec may name (memory, peaks, runtime)")
    catalog.add_argument("--format", choices=("text", "json"), default="text", help="output format")

    plan = commands.add_parser("plan", help="predict memory, step time, cost and the best layout of a spec")
    plan.add_argument("spec", type=Path, help="spec file")
    _add_spec_arguments(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (the plan contract)")
    plan.add_argument("-o", "--output", type=Path, help="write the plan JSON to this file (atomically)")
    plan.add_argument("--search", action="store_true", help="search layouts even when `parallel` is fixed")
    plan.add_argument("--top", type=int, default=5, metavar="N", help="candidates to keep (default 5)")
    plan.add_argument("--against", type=Path, metavar="OLD_JSON", help="show what changed since an earlier plan.json")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help="with --against: exit 0 when nothing changed, 2 when something did (Terraform's convention)")
    plan.add_argument("--html", type=Path, metavar="PATH",
                      help="also draw the plan as one offline HTML page (memory, time, candidates)")
    plan.add_argument("--verify", action="store_true",
                      help="TPU only: compile the planned step ahead of time with libtpu and compare its memory per chip")
    plan.add_argument("--jax-python", metavar="PATH",
                      help="with --verify: the python of a venv with jax[tpu] (default: $SPECC_JAX_PYTHON, else this one)")

    export = commands.add_parser("export", help="write a stage's model (final/ or a training checkpoint) as a "
                                                "Hugging Face directory (imports torch)")
    export.add_argument("checkpoint", type=Path, help="a model directory (<stage>/final) or <stage>/checkpoints/step-N")
    export.add_argument("out", type=Path, help="the Hugging Face directory to write")
    export.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the run's tokenize/tokenizer.json)")
    export.add_argument("--chat-template", help="chatml, llama3 or a template file: the one the model was tuned with")
    export.add_argument("--eos-token", help="end-of-document token (default: the tokenizer config's, else <|endoftext|>)")
    export.add_argument("--pad-token", help="padding token (default: <|pad|> when the tokenizer has it)")
    export.add_argument("--max-shard-mib", type=int, default=5120, help="weights above this are sharded (default 5120)")
    export.add_argument("--model", type=Path, help="architecture of a training checkpoint: a model directory or config.json")
    export.add_argument("--format", choices=("hf", "gguf"), default="hf",
                        help="hf: a Hugging Face directory (default); gguf: one GGUF file OUT for llama.cpp")
    export.add_argument("--quantization", choices=("none", "int8", "int4", "gptq"), default="none",
                        help="hf: weights in the compressed-tensors format transformers and vLLM load (gptq needs --calibration)")
    export.add_argument("--group-size", type=int, default=64, help="input features per int4/gptq scale (default 64)")
    export.add_argument("--calibration", type=Path, help="gptq: a UTF-8 text file of held-out text to calibrate on")
    export.add_argument("--gguf-type", choices=("f32", "f16", "q8_0"), default="f16", help="gguf tensor type (default f16)")

    calibrate = commands.add_parser("calibrate", help="fit this cluster's step-time profile from bundles that ran or a CSV table")
    calibrate.add_argument("inputs", nargs="+", type=Path, metavar="BUNDLE_OR_TABLE",
                           help="bundle directories whose pretrain stage ran, or CSV tables (spec, measured_step_s, overrides)")
    calibrate.add_argument("-o", "--output", type=Path, help="write the profile (a partial spec to `extends:`) here")
    calibrate.add_argument("--name", help="the profile's name (default: the accelerator and run count)")

    from specc.launch import cli as launch_cli  # launch, status, cancel; light to import (no torch)

    launch_cli.add_parsers(commands)
    from specc.report import cli as report_cli  # light (matplotlib only when a report is written)

    report_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler = {"validate": _cmd_validate, "schema": _cmd_schema, "rules": _cmd_rules,
                   "catalog": _cmd_catalog, "plan": _cmd_plan, "calibrate": _cmd_calibrate,
                   "export": _cmd_export, "report": _cmd_report}.get(args.command, _cmd_launch)
        return handler(args)
    except UsageError as error:
        print(f"specc: error: {error}", file=sys.stderr)
        print("run `specc --help` for usage", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("specc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception:  # noqa: BLE001 - last-resort guard: internal errors exit 2 with a traceback
        traceback.print_exc()
        print(f"specc {__version__}: internal error; please report it with the spec that caused it",
              file=sys.stderr)
        return EXIT_INTERNAL


def _cmd_export(args: argparse.Namespace) -> int:
    """`specc export`: the runtime's HF export (`specc.runtime.hf.command`); user mistakes exit 1."""
    from specc.runtime.hf.command import ExportError, export_command
    from specc.runtime.integrity import StageError

    if args.max_shard_mib < 1:
        raise UsageError(f"--max-shard-mib must be at least 1 (got {args.max_shard_mib})")
    try:
        files = export_command(args.checkpoint, args.out, args.tokenizer, args.chat_template, args.eos_token,
                               args.pad_token, args.max_shard_mib, args.model, fmt=args.format,
                               quantization=args.quantization, group_size=args.group_size,
                               calibration=args.calibration, gguf_type=args.gguf_type)
    except (ExportError, StageError) as error:
        raise UsageError(str(error)) from None
    print(f"{args.out}: {len(files)} files ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})")
    return EXIT_OK


def _cmd_launch(args: argparse.Namespace) -> int:
    """`launch`, `status` and `cancel` live in specc.launch.cli."""
    from specc.launch.cli import run_command

    return run_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from specc.report.cli import cmd_report

    return cmd_report(args)


def _cmd_validate(args: argparse.Namespace) -> int:
    import json

    from specc.diagnostics.check import check_file
    from specc.diagnostics.diagnostic import render_text, report_json

    status = EXIT_OK
    reports: list[dict] = []
    for path in args.specs:
        result = check_file(path, args.overrides)
        if result.valid and args.path_checks:
            from specc.diagnostics.preflight import preflight

            result.diagnostics.extend(preflight(result.spec, result.source_map, path, check_absolute=False))
        failed = not result.valid or (args.strict and result.diagnostics)
        status = max(status, EXIT_INVALID if failed else EXIT_OK)
        if args.format == "json":
            reports.append(report_json(str(path), result.diagnostics, not failed))
            continue
        if result.diagnostics:
            print(render_text(result.diagnostics))
        print(f"{path}: {'invalid' if failed else 'valid'}")
    if args.format == "json":
        print(json.dumps({"valid": status == EXIT_OK, "files": reports}, indent=2))
    return status


def _cmd_schema(args: argparse.Namespace) -> int:
    from specc.spec.schema import schema_text

    text = schema_text()
    if args.output:
        try:
            args.output.write_text(text)
        except OSError as error:
            raise UsageError(f"cannot write {args.output}: {error.strerror}") from None
    else:
        print(text, end="")
    return EXIT_OK


def _cmd_rules(args: argparse.Namespace) -> int:
    import inspect

    from specc.diagnostics.rules import PATH_RULES, RULES

    from specc.diagnostics.rules.hf_rules import SOURCE_RULES

    listed = [(r.code, r.name, ", ".join(r.needs), r.documentation) for r in (*RULES, *PATH_RULES)]
    listed += [(code, check.__name__, "model.init_from's directory", check.__doc__ or "") for code, check in SOURCE_RULES]
    chosen = [rule for rule in listed if args.code in (None, rule[0])]
    if not chosen:
        raise UsageError(f"no rule {args.code!r}; run `specc rules` for the list")
    for code, name, needs, documentation in chosen:
        print(f"{code}  {name}  (reads: {needs})")
        print(inspect.cleandoc(documentation))
        print()
    return EXIT_OK


def _cmd_catalog(args: argparse.Namespace) -> int:
    import json

    from specc.catalog.listing import catalog_entries, render_catalog

    rows = catalog_entries()
    if args.format == "json":
        print(json.dumps({"accelerators": rows}, indent=2))
    else:
        render_catalog(rows)
    return EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit, report before / after / leave-one-run-out, write the profile; a bad input exits 1."""
    from specc.plan import calibrate as cal
    from specc.io import atomic_write_text

    runs = []
    try:
        for path in args.inputs:
            if path.is_dir():
                runs.append(cal.run_from_bundle(path))
            elif path.suffix.lower() == ".csv" and path.is_file():
                runs.extend(cal.runs_from_table(path))
            else:
                raise cal.CalibrationError(f"{path}: neither a bundle directory nor a .csv table")
    except (cal.CalibrationError, OSError) as error:
        print(f"specc: error: {error}", file=sys.stderr)
        return EXIT_INVALID
    accelerators = sorted({run.accelerator for run in runs})
    if len(accelerators) > 1:
        raise UsageError(f"the runs are on different accelerators ({', '.join(accelerators)}): a profile is one "
                         "cluster's; calibrate each separately")
    result = cal.calibrate(runs)
    print(cal.report(result))
    profile = result.profile(args.name or f"{accelerators[0]}, {len(runs)} run(s)")
    text = cal.profile_yaml(profile)
    if args.output:
        try:
            atomic_write_text(args.output, text)
        except OSError as error:
            raise UsageError(f"cannot write {args.output}: {error.strerror}") from None
        print(f"wrote {args.output}: apply it with `extends: {args.output.name}` in this cluster's specs")
    else:
        print(text, end="")
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    """Validate first (same diagnostics, exit 1 when invalid), then plan; never imports torch."""
    import json

    from specc.diagnostics.check import check_file
    from specc.diagnostics.diagnostic import render_text, report_json

    if args.top < 1:
        raise UsageError(f"--top must be at least 1 (got {args.top})")
    if args.jax_python and not args.verify:
        raise UsageError("--jax-python is read only with --verify")
    result = check_file(args.spec, args.overrides)
    if not result.valid:
        if args.format == "json":
            print(json.dumps({"valid": False, "files": [report_json(str(args.spec), result.diagnostics, False)]}, indent=2))
        else:
            print(render_text(result.diagnostics))
            print(f"{args.spec}: invalid")
        return EXIT_INVALID
    from specc.plan import build_plan, plan_json
    from specc.io import atomic_write_text

    plan = build_plan(result.spec, force_search=args.search, top=args.top, overrides=list(args.overrides))
    text = plan_json(plan)
    verified = None
    if args.verify:
        verified, text = _verify(args, result.spec, text)
        if verified is None:
            return EXIT_INVALID
    if args.output:
        try:
            atomic_write_text(args.output, text)
        except OSError as error:
            raise UsageError(f"cannot write {args.output}: {error.strerror}") from None
    if args.html:
        from specc.report.cli import write_plan_report

        try:
            write_plan_report(json.loads(text), args.html)
        except OSError as error:
            raise UsageError(f"cannot write {args.html}: {error.strerror}") from None
        print(f"plan report: {args.html}", file=sys.stderr)
    if args.against:
        return _plan_diff(args, json.loads(text))
    if args.json or args.format == "json":
        print(text, end="")
    else:
        from specc.plan.render import render

        render(plan)
        if verified is not None:
            from specc.plan.verify_tpu import render as render_verify

            print(render_verify(verified))
    return EXIT_OK


def _verify(args: argparse.Namespace, spec, text: str) -> tuple[dict | None, str]:
    """`--verify`: the verify object and the plan JSON holding it (and its P250); (None, text) after
    printing why it cannot run here (no libtpu or torch-xla, not a TPU spec, too large to trace)."""
    import json

    from specc.plan.findings import classified
    from specc.plan.verify_tpu import VerifyError, verify

    data = json.loads(text)
    try:
        verified = verify(spec, data, args.jax_python)
    except VerifyError as error:
        print(f"specc: error: {error}", file=sys.stderr)
        return None, text
    data["verify"] = verified
    if "finding" in verified:
        data["warnings"] = data["warnings"] + classified([verified["finding"]])
    return verified, json.dumps(data, indent=2, sort_keys=True) + "\n"


def _plan_diff(args: argparse.Namespace, new: dict) -> int:
    from specc.plan.diff import compare_with_file

    try:
        text, changed = compare_with_file(args.against, new, as_json=args.json or args.format == "json",
                                          new_name=str(args.spec))
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(text)
    return 2 if (changed and args.detailed_exitcode) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
