"""`specc report BUNDLE`: one offline HTML page about a launched (or finished) run.

What it reads, all written by the stages themselves: `jobs/launch.json` (outcomes), `plan.json`
(predictions), each stage's `metrics.jsonl` (curves, measured step time and memory), the data
stage's `stats.json` (documents and bytes through each filter, dedup, mixture), the tokenize
stage's `stats.json` (compression), the eval stage's `results.json` (scores with standard
errors) and the deploy stage's `<target>/report.json` (sizes, quantized perplexity). Sections
whose stage has not run are left out, so a report of a run still in progress works too.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from specc.emit.bundle import STATE_DIR
from specc.report import charts
from specc.report.html import Markup, escape, figures, page, paragraph, section, table

TRAINING_KEYS = ("loss", "val_loss", "lr", "tokens_per_s")
REPORT_FILE = f"{STATE_DIR}/report.html"
"""Under the bundle's launch-state directory (`STATE_DIR`): the bundle itself must hold exactly what
was emitted, or relaunching it from the spec would find it changed."""


def read_jsonl(path: Path) -> list[dict]:
    """The JSON object lines of a file (a half-written last line is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is absent or damaged (not JSON, not UTF-8: the report
    shows what it can of a run, as for a half-written metrics line)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def step_records(records: list[dict]) -> list[dict]:
    """Per-step training records, the last one per step (a resumed run rewrites its last steps)."""
    by_step: dict[int, dict] = {}
    for record in records:
        if isinstance(record.get("step"), int) and "event" not in record:
            by_step[record["step"]] = {**by_step.get(record["step"], {}), **record}
    return [by_step[step] for step in sorted(by_step)]


def curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [float(p[1]) for p in points]


# --- collecting ------------------------------------------------------------------------------


def collect(bundle_dir: Path) -> dict:
    """Everything the report shows, as plain data (also what the tests inspect)."""
    from specc.launch.launcher import read_stages

    plan = read_json(bundle_dir / "plan.json") or {}
    launch = read_json(bundle_dir / "jobs" / "launch.json") or {}
    outcomes = {entry["dirname"]: entry for entry in launch.get("stages", [])}
    stages = []
    for stage in read_stages(bundle_dir):
        outputs = stage.outputs(bundle_dir)
        records = read_jsonl(outputs / "metrics.jsonl")
        stages.append({"name": stage.name, "dirname": stage.dirname, "outputs": outputs, "config": stage.config,
                       "outcome": outcomes.get(stage.dirname, {}), "records": records,
                       "steps": step_records(records), "done": (outputs / "_SUCCESS.json").is_file()})
    return {"bundle": bundle_dir, "plan": plan, "launch": launch, "stages": stages}


def _stage(report: dict, name: str) -> dict | None:
    return next((s for s in report["stages"] if s["name"] == name), None)


# --- sections --------------------------------------------------------------------------------


def outcome_section(report: dict) -> str:
    rows = []
    for stage in report["stages"]:
        outcome = stage["outcome"]
        state = outcome.get("state") or ("completed" if stage["done"] else "not launched")
        if state == "submitted":
            state = "running" if stage["records"] else "submitted"
        css = "ok" if state in ("completed", "skipped") else "bad" if state in ("failed", "cancelled") else "other"
        last = stage["steps"][-1] if stage["steps"] else {}
        rows.append([stage["dirname"], Markup(f'<span class="{css}">{escape(state)}</span>'),
                     outcome.get("seconds"), last.get("step"), last.get("loss"), outcome.get("reason") or ""])
    return section("stages", "Stages", table(["stage", "outcome", "seconds", "last step", "last loss", "reason"],
                                             rows, "stages-table"))


def training_section(report: dict) -> str:
    """Loss and validation curves per training stage; lr and throughput."""
    trained = [s for s in report["stages"] if s["steps"]]
    if not trained:
        return ""
    losses, rates, learning = [], [], []
    for stage in trained:
        series = [(key, *curve(stage["steps"], key)) for key in ("loss", "val_loss")]
        losses.append(charts.lines(f"{stage['name']}: loss", "step", "loss", series))
        extra = {key: curve(stage["steps"], key) for key in ("reward", "kl", "policy_loss", "value_loss")}
        if any(x for x, _ in extra.values()):
            losses.append(charts.lines(f"{stage['name']}: reward and losses", "step", "value",
                                       [(k, *v) for k, v in extra.items()]))
        learning.append((stage["name"], *curve(stage["steps"], "lr")))
        rates.append((stage["name"], *curve(stage["steps"], "tokens_per_s")))
    return section("training", "Training curves",
                   figures(*losses),
                   figures(charts.lines("learning rate", "step", "lr", learning),
                                 charts.lines("throughput", "step", "tokens/s", rates)))


def predicted_section(report: dict) -> str:
    """Predicted (plan) vs measured (median over logged steps) step time and peak memory per stage."""
    plan = report["plan"]
    aligned = {entry.get("stage"): entry for entry in plan.get("alignment", [])}
    names, step_rows, memory = [], {"predicted": [], "measured": []}, {"predicted": [], "measured": []}
    rows = []
    for stage in report["stages"]:
        steps = stage["steps"]
        if not steps:
            continue
        measured_step = _median([r.get("step_s") for r in steps[1:] or steps])  # the first step includes warm-up
        measured_memory = max((r["peak_memory_gib"] for r in steps if isinstance(r.get("peak_memory_gib"), float)),
                              default=None)
        predicted_step = _first([r.get("predicted_step_s") for r in steps])
        predicted_memory = _first([r.get("predicted_peak_memory_gib") for r in steps])
        if predicted_step is None and stage["name"] in ("pretrain", "pretrain_tpu"):
            predicted_step = (plan.get("time") or {}).get("step_s")
        if predicted_memory is None:
            predicted_memory = (aligned.get(stage["name"]) or {}).get("per_device_gib")
            if predicted_memory is None and stage["name"] in ("pretrain", "pretrain_tpu"):
                predicted_memory = (plan.get("memory") or {}).get("per_device_gib")
        names.append(stage["name"])
        step_rows["predicted"].append(predicted_step)
        step_rows["measured"].append(measured_step)
        memory["predicted"].append(predicted_memory)
        memory["measured"].append(measured_memory)
        rows.append([stage["name"], predicted_step, measured_step, _ratio(measured_step, predicted_step),
                     predicted_memory, measured_memory, _ratio(measured_memory, predicted_memory)])
    if not names:
        return ""
    device = (plan.get("hardware") or {}).get("accelerator") or ""
    return section("predicted", "Predicted vs measured",
                   figures(charts.grouped_bars("step time per stage", "seconds", names, step_rows,
                                               log_y=_spread(step_rows) > 20),
                                 charts.grouped_bars("peak memory per device", "GiB", names, memory)),
                   table(["stage", "predicted step s", "measured step s (median)", "measured / predicted",
                          "predicted peak GiB", "measured peak GiB", "measured / predicted"], rows, "predicted-table"),
                   paragraph(f"Measured memory on CPU is the process's peak resident set, which includes the "
                             f"Python runtime; on GPUs it is torch's peak allocation. {device}".strip()))


def data_section(report: dict) -> str:
    """Documents and bytes through each filter and dedup; mixture shares requested vs achieved."""
    stage = _stage(report, "data")
    stats = read_json(stage["outputs"] / "stats.json") if stage else None
    if not stats:
        return ""
    steps = [("read", sum(s["documents_in"] for s in stats["sources"].values()),
              sum(s["bytes_in"] for s in stats["sources"].values()))]
    rows = [["read", steps[0][1], steps[0][2], "", ""]]
    for entry in stats.get("filters", []):
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(entry.get("reasons", {}).items()))
        rows.append([f"after {entry['name']}", entry["documents_out"], entry["bytes_out"], entry["dropped"], reasons])
    after_filters = (sum(s["documents_after_filters"] for s in stats["sources"].values()),
                     sum(s["bytes_after_filters"] for s in stats["sources"].values()))
    dedup = stats.get("dedup", {})
    rows.append(["after filters (all sources)", *after_filters, "", ""])
    rows.append(["after dedup", dedup.get("documents_out"), None, dedup.get("exact_removed", 0) + dedup.get("near_removed", 0),
                 f"exact {dedup.get('exact_removed', 0)}, near {dedup.get('near_removed', 0)}"])
    output = stats.get("output", {})
    rows.append(["output (after mixture)", output.get("documents"), output.get("bytes"), "", ""])
    funnel_labels = ["read", "after filters", "after dedup", "output"]
    funnel = [steps[0][1], after_filters[0], dedup.get("documents_out") or 0, output.get("documents") or 0]
    mixture = (stats.get("mixture") or {}).get("sources", {})
    sources = sorted(mixture)
    shares = charts.grouped_bars("mixture shares", "share of tokens", sources,
                                 {"requested": [mixture[s].get("requested_proportion") for s in sources],
                                  "achieved": [mixture[s].get("achieved_proportion") for s in sources]})
    per_filter = charts.horizontal_bars(
        "documents through each step", "documents", funnel_labels, funnel,
        [f"{v:,} ({v / max(funnel[0], 1):.0%})" for v in funnel])
    return section("data", "Data funnel",
                   figures(per_filter, shares),
                   table(["step", "documents", "bytes", "removed", "why"], rows, "data-table"),
                   *mixture_parts(stats.get("mixture") or {}), *drops_by_source(stats), drops_by_language(stats))


def mixture_parts(mixture: dict) -> list[str]:
    """Requested vs achieved share per source, and the stage's drift warnings (`mixture.drift_warnings`)."""
    rows = [[name, f"{source['requested_proportion']:.1%}", f"{source['achieved_proportion']:.1%}",
             f"{(source['achieved_proportion'] - source['requested_proportion']) * 100:+.1f}",
             source.get("documents_out"), source.get("epochs")]
            for name, source in sorted(mixture.get("sources", {}).items())]
    if not rows:
        return []
    warnings = [paragraph(f"warning: {warning}", "bad") for warning in mixture.get("warnings", [])]
    return ["<h3>Mixture</h3>",
            table(["source", "requested share", "achieved share", "drift (points)", "documents out", "epochs"],
                  rows, "mixture-table"), *warnings]


def drops_by_source(stats: dict) -> list[str]:
    """Each source's documents through each filter that saw them, with the reasons, and its dedup removals."""
    rows = []
    for name, totals in stats["sources"].items():
        removed = (stats.get("dedup") or {}).get("by_source", {}).get(name, {})
        rows.append([name, "read", totals["documents_in"], "", ""])
        for filter_name, record in totals.get("filters", {}).items():
            rows.append([name, filter_name, record["documents_in"], record["dropped"],
                         ", ".join(f"{k} {v:,}" for k, v in record["reasons"].items())])
        rows.append([name, "dedup", totals["documents_after_filters"],
                     removed.get("exact", 0) + removed.get("near", 0),
                     f"exact {removed.get('exact', 0):,}, near {removed.get('near', 0):,}"])
    return ["<h3>Drops per source</h3>",
            table(["source", "step", "documents in", "dropped", "why"], rows, "data-sources-table")]


def drops_by_language(stats: dict) -> str:
    """Documents per language a language filter identified, and what dropped them (any filter after it)."""
    languages = stats.get("languages") or {}
    if not languages:
        return ""
    rows = [[language, record["documents_in"], record["dropped"],
             ", ".join(f"{k} {v:,}" for k, v in record["reasons"].items())] for language, record in languages.items()]
    return ("<h3>Drops per language</h3>"
            + table(["language", "documents in", "dropped", "why"], rows, "data-languages-table")
            + paragraph("Counted from the language filter on: documents dropped before it, or from sources it "
                        "does not apply to, have no identified language."))


def tokenizer_section(report: dict) -> str:
    stage = _stage(report, "tokenize")
    stats = read_json(stage["outputs"] / "stats.json") if stage else None
    if not stats:
        return ""
    rows, labels, values = [], [], []
    for source, sizes in sorted(stats.get("compression", {}).items()):
        for size, measured in sizes.items():
            rows.append([source, int(size), measured.get("bytes_per_token"), measured.get("tokens_per_word"),
                         measured.get("tokens")])
            labels.append(f"{source} ({size})")
            values.append(measured.get("bytes_per_token") or 0.0)
    chart = charts.horizontal_bars("compression on held-out text", "bytes per token (higher compresses more)",
                                   labels, values)
    return section("tokenizer", "Tokenizer",
                   paragraph(f"vocabulary {stats.get('vocab_size'):,}; {stats.get('train_tokens', 0):,} train and "
                             f"{stats.get('validation_tokens', 0):,} validation tokens"),
                   figures(chart),
                   table(["source", "vocabulary", "bytes/token", "tokens/word", "tokens"], rows, "tokenizer-table"))


def eval_section(report: dict) -> str:
    stage = _stage(report, "eval")
    results = read_json(stage["outputs"] / "results.json") if stage else None
    if not results or not results.get("results"):
        return ""
    rows = [[r["model"], r["task"], r["metric"], r["value"], r.get("stderr"), r.get("count")]
            for r in results["results"]]
    bars = {}
    scored = [r for r in results["results"] if r["metric"] != "perplexity"]
    tasks = sorted({f"{r['task']}/{r['metric']}" for r in scored})
    for model in dict.fromkeys(r["model"] for r in scored):
        values = {f"{r['task']}/{r['metric']}": r["value"] for r in scored if r["model"] == model}
        bars[model] = [values.get(task) for task in tasks]
    return section("eval", "Evaluation",
                   figures(charts.grouped_bars("scores by model", "score", tasks, bars, size=(7.0, 3.2))),
                   table(["model", "task", "metric", "value", "± stderr", "n"], rows, "eval-table"))


def deploy_section(report: dict) -> str:
    stage = _stage(report, "deploy")
    if stage is None:
        return ""
    reports = [read_json(path) for path in sorted(stage["outputs"].glob("*/report.json"))]
    reports = [r for r in reports if r]
    if not reports:
        return ""
    rows = [[r["target"], r.get("quantization"), r.get("weight_bytes_full"), r.get("weight_bytes_served"),
             r.get("perplexity_full"), r.get("perplexity_quantized"),
             None if r.get("perplexity_change") is None else f"{r['perplexity_change']:+.2%}"] for r in reports]
    sizes = charts.horizontal_bars("served weight size", "MB", [r["target"] for r in reports],
                                   [(r.get("weight_bytes_served") or r.get("weight_bytes_full") or 0) / 1e6
                                    for r in reports])
    return section("deploy", "Deployment",
                   figures(sizes),
                   table(["target", "quantization", "full bytes", "served bytes", "perplexity full",
                          "perplexity quantized", "change"], rows, "deploy-table"))


def _median(values: list) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def _first(values: list) -> float | None:
    return next((float(v) for v in values if isinstance(v, (int, float))), None)


def _spread(groups: dict[str, list]) -> float:
    """Largest over smallest positive value (a log axis shows both ends when they are far apart)."""
    values = [v for row in groups.values() for v in row if isinstance(v, (int, float)) and v > 0]
    return max(values) / min(values) if values else 1.0


def _ratio(measured: float | None, predicted: float | None) -> float | None:
    return measured / predicted if measured is not None and predicted else None


# --- the page --------------------------------------------------------------------------------


def render(bundle_dir: Path) -> str:
    report = collect(bundle_dir)
    spec_name = (report["plan"].get("spec") or {}).get("name") or bundle_dir.name
    meta = (f"bundle {bundle_dir.name} · executor {report['launch'].get('executor', 'not launched')} · "
            f"generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    sections = [outcome_section(report), training_section(report), predicted_section(report), data_section(report),
                tokenizer_section(report), eval_section(report), deploy_section(report)]
    return page(f"specc run report: {spec_name}", meta, [s for s in sections if s])


def write_report(bundle_dir: Path, output: Path | None = None) -> Path:
    """Write the report (default `BUNDLE/jobs/report.html`) atomically; returns its path."""
    from specc.runtime.io import atomic_write_text

    path = output or bundle_dir / REPORT_FILE
    atomic_write_text(path, render(bundle_dir))
    return path
