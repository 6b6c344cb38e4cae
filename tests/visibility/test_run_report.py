"""The tiny run as a person sees it: live progress while `specc launch` waits, the results and the
report path at the end, TensorBoard event files read back with TensorBoard's own reader, and the
run report opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import MATPLOTLIB_BLUE, chart_count, colour_share, dump_dom, screenshot, table_rows

from specc.report.html import number

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # runs data -> tokenize -> pretrain -> eval -> deploy (int8) of the tiny spec

TINY_RUN = ["corpus.sources.0.max_files=100", "corpus.sources.1.num_documents=500", "tokenizer.sample_documents=500",
            "~alignment", "~deploy.targets.2", "~deploy.targets.0", "schedule.steps=10", "schedule.checkpoint_interval=5", "schedule.eval_interval=5",
            "schedule.eval_batches=2", "schedule.warmup_steps=2", "+schedule.log_interval=2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(bundle directory, launch stdout) of one tiny run, launched as a user would (stdout not a terminal)."""
    out = tmp_path_factory.mktemp("visibility")
    arguments = [item for override in TINY_RUN for item in ("--set", override)]
    result = subprocess.run([sys.executable, "-m", "specc.cli", "launch", str(ROOT / "specs" / "tiny.yaml"),
                             "--executor", "local", "--out", str(out), *arguments], capture_output=True, text=True,
                            cwd=ROOT, timeout=1200, env={**os.environ, "SPECC_PROGRESS_SECONDS": "1"})
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    bundle = Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))
    return bundle, result.stdout


def test_launch_shows_progress_then_results_and_the_report(tiny_run):
    bundle, stdout = tiny_run
    lines = stdout.splitlines()
    assert any(re.match(r"01-data +filter [\d,]+/[\d,]+ docs \(\d+%\)", line) for line in lines), stdout
    assert any(re.match(r"02-tokenize +(sampling|training tokenizer|encoding part \d+/\d+)", line) for line in lines)
    training = [line for line in lines if re.match(r"03-pretrain +step \d+/10", line)]
    assert training and all("elapsed" in line for line in training)
    assert any(re.search(r"step [1-9]\d*/10 +loss \d+\.\d{4} .* tok/s +elapsed [\d:]+ +ETA [\d:]+", line)
               for line in training), training
    assert any(line.startswith("04-eval ") and "scored" in line for line in lines) or "04-eval: completed" in stdout
    results = json.loads((bundle.parent / "runs" / "tiny" / "eval" / "results.json").read_text())["results"]
    assert "evaluation results" in stdout
    for row in results:  # the eval table at the end, row by row
        assert re.search(rf"{row['model']} +{row['task']} +{row['metric']} +{row['value']:.4f}", stdout), row
    assert f"report: {bundle / 'jobs' / 'report.html'}" in stdout
    assert "tensorboard --logdir" in stdout


def test_tensorboard_event_files_for_training_and_eval(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bundle, _ = tiny_run
    runs = bundle.parent / "runs" / "tiny"
    events = EventAccumulator(str(runs / "tensorboard" / "pretrain"), size_guidance={"scalars": 0})
    events.Reload()
    logged = [json.loads(line) for line in (runs / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("loss")] == [(s, round(v, 4)) for s, v in losses]
    assert {"val_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_memory_gib"} <= set(events.Tags()["scalars"])
    scores = EventAccumulator(str(runs / "tensorboard" / "eval"), size_guidance={"scalars": 0})
    scores.Reload()
    assert any(tag.startswith("eval/pretrain/") for tag in scores.Tags()["scalars"])
    assert not (runs / "tensorboard" / "data").exists()  # data stages keep their metrics in metrics.jsonl


def test_run_report_opens_in_chromium(tiny_run, tmp_path):
    bundle, _ = tiny_run
    page = bundle / "jobs" / "report.html"
    dom = dump_dom(page)
    assert "<title>specc run report: tiny</title>" in dom
    for heading in ("Stages", "Training curves", "Predicted vs measured", "Data funnel", "Tokenizer", "Evaluation",
                    "Deployment"):
        assert f"<h2>{heading}</h2>" in dom, heading
    assert chart_count(dom) >= 8
    stages = {row[0]: row[1] for row in table_rows(dom, "stages-table")}
    assert stages == {"01-data": "completed", "02-tokenize": "completed", "03-pretrain": "completed",
                      "04-eval": "completed", "05-deploy": "completed"}
    deployed = json.loads((bundle.parent / "runs" / "tiny" / "deploy" / "int8" / "report.json").read_text())
    [int8] = table_rows(dom, "deploy-table")
    assert int8[:2] == ["int8", "int8"] and int8[3] == number(deployed["weight_bytes_served"])
    assert int8[6] == f"{deployed['perplexity_change']:+.2%}"
    results = json.loads((bundle.parent / "runs" / "tiny" / "eval" / "results.json").read_text())["results"]
    shown = table_rows(dom, "eval-table")
    assert [(r[0], r[1], r[2], r[3]) for r in shown] == [(r["model"], r["task"], r["metric"], number(r["value"]))
                                                         for r in results]
    assert any(r[4] for r in shown)  # standard errors of the scored tasks
    stats = json.loads((bundle.parent / "runs" / "tiny" / "data" / "stats.json").read_text())
    funnel = {row[0]: row[1] for row in table_rows(dom, "data-table")}
    assert funnel["output (after mixture)"] == f"{stats['output']['documents']:,}"
    mixture = {row[0]: row[2] for row in table_rows(dom, "mixture-table")}
    assert mixture == {name: f"{s['achieved_proportion']:.1%}" for name, s in stats["mixture"]["sources"].items()}
    assert dom.count('<p class="bad">warning: source ') == len(stats["mixture"]["warnings"])
    assert {row[0] for row in table_rows(dom, "data-sources-table")} == set(stats["sources"])
    shot = screenshot(page, tmp_path / "report.png", 3600)
    assert colour_share(shot, MATPLOTLIB_BLUE) > 0.003


def test_report_command_rewrites_the_report(tiny_run, tmp_path):
    bundle, _ = tiny_run
    target = tmp_path / "again.html"
    result = subprocess.run([sys.executable, "-m", "specc.cli", "report", str(bundle), "-o", str(target)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and f"report: {target}" in result.stdout, result.stderr
    text = target.read_text()
    assert "<svg" in text and "<script" not in text and "<link" not in text
    assert set(re.findall(r"https?://[^\"' <]+", text)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def test_the_report_leaves_the_bundle_as_emitted(tiny_run):
    """The report lives under jobs/ with the launch state: relaunching the spec reuses the bundle."""
    bundle, _ = tiny_run
    arguments = [item for override in TINY_RUN for item in ("--set", override)]
    result = subprocess.run([sys.executable, "-m", "specc.cli", "launch", str(ROOT / "specs" / "tiny.yaml"),
                             "--executor", "local", "--out", str(bundle.parent), *arguments], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0 and f"bundle: {bundle} (unchanged, reused)" in result.stdout, result.stderr
    assert "03-pretrain: skipped" in result.stdout


def test_damaged_json_files_are_skipped_not_a_traceback(tmp_path):
    """A plan.json or jobs/launch.json overwritten with non-UTF-8 bytes was a UnicodeDecodeError
    in `specc report`; like a half-written metrics line, the report leaves it out."""
    from specc.report.run import read_json

    (tmp_path / "binary.json").write_bytes(b"\x81\xff{}")
    (tmp_path / "truncated.json").write_text('{"stages": [')
    (tmp_path / "good.json").write_text('{"stages": []}')
    assert read_json(tmp_path / "binary.json") is None and read_json(tmp_path / "truncated.json") is None
    assert read_json(tmp_path / "good.json") == {"stages": []}
