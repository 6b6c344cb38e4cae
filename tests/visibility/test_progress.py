"""The launcher's progress lines, from metrics records as the stages write them."""

from __future__ import annotations

from specc.launch.progress import MetricsTail, StageView, format_duration
from specc.runtime.io import MetricsWriter


def test_training_line_uses_the_plan_before_steps_then_the_measured_step_time(tmp_path):
    config = {"params": {"schedule": {"steps": 200}, "predicted": {"step_s": 0.5}}}
    view = StageView.for_stage("pretrain", "03-pretrain", config)
    view.started = 1000.0
    assert view.line(now=1010.0) == "03-pretrain    step 0/200 (starting)  elapsed 0:10  ETA 1:40 (plan)"
    view.update([{"step": 10, "loss": 5.0, "tokens_per_s": 2048.0, "time": 1020.0, "step_s": 1.0},
                 {"step": 20, "loss": 4.5, "val_loss": 4.75, "tokens_per_s": 4096.0, "time": 1040.0}])
    # 2 s per step measured between the records: 180 steps left -> 6:00
    assert view.line(now=1040.0) == ("03-pretrain    step 20/200  loss 4.5000  val 4.7500  4,096 tok/s  "
                                     "elapsed 0:40  ETA 6:00")


def test_alignment_total_comes_from_its_start_record():
    view = StageView.for_stage("sft", "04-sft", {"params": {}})
    view.update([{"event": "start", "total_steps": 12}, {"step": 3, "loss": 2.0, "step_s": 0.25, "time": 1.0}])
    assert view.total_steps == 12 and view.eta() == (0.25 * 9, True)


def test_data_line_counts_documents_against_the_totals(tmp_path):
    stage_dir = tmp_path / "data"
    with MetricsWriter(stage_dir / "metrics.jsonl") as metrics:
        metrics.write(event="plan", phase="filter", sources={"a": {"documents": 300, "bytes": None},
                                                             "b": {"documents": 100, "bytes": 5000}})
        metrics.write(event="part", source="a", part=0, documents_in=100, documents_out=90, bytes_in=2_000_000,
                      bytes_out=1_000_000, seconds=1.0)
    with MetricsWriter(stage_dir / "metrics.task-1.jsonl") as metrics:  # a Slurm array task's share
        metrics.write(event="part", source="a", part=1, documents_in=100, documents_out=80, bytes_in=1_000_000,
                      bytes_out=1_000_000, seconds=1.0)
    view = StageView.for_stage("data", "01-data", {"params": {}})
    tail = MetricsTail(stage_dir)
    view.update(tail.read())
    view.started = 0.0
    assert view.line(now=10.0) == "01-data        filter 200/400 docs (50%) 3.0 MB, kept 170  elapsed 0:10  ETA 0:10"
    assert tail.read() == []  # nothing new
    with MetricsWriter(stage_dir / "metrics.jsonl") as metrics:
        metrics.write(event="phase", phase="dedup")
    view.update(tail.read())
    assert "dedup (200 docs read, 170 kept by the filters)" in view.line(now=12.0)


def test_tokenizer_phases_and_eval_scores():
    tokenize = StageView.for_stage("tokenize", "02-tokenize", {"params": {}})
    tokenize.update([{"event": "phase", "phase": "training tokenizer"}])
    assert tokenize._body() == "training tokenizer"
    tokenize.update([{"event": "phase", "phase": "encoding", "parts_total": 4}, {"event": "part", "file": "x"}])
    assert tokenize._body() == "encoding part 1/4" and tokenize.fraction() == 0.25
    evaluation = StageView.for_stage("eval", "08-eval", {"params": {"checkpoints": {"pretrain": "p", "sft": "s"},
                                                                    "eval": {"perplexity": [{}], "tasks": [{}]}}})
    evaluation.update([{"model": "pretrain", "task": "mc", "metric": "acc", "value": 0.5, "stderr": 0.1}])
    assert evaluation._body() == "scored 1/4 (model, task), last mc acc 0.5"


def test_partial_lines_wait_for_their_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2')
    tail = MetricsTail(tmp_path)
    assert tail.read() == [{"step": 1}]
    with open(path, "a") as stream:
        stream.write("}\n")
    assert tail.read() == [{"step": 2}]


def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 125, 3725)] == ["?", "0:05", "2:05", "1:02:05"]


def test_a_queued_job_says_so_and_its_clock_starts_when_it_runs():
    view = StageView.for_stage("pretrain", "03-pretrain", {"params": {"schedule": {"steps": 10}}})
    view.started = 0.0
    view.scheduler_state("PENDING")
    assert view.line(now=65.0) == "03-pretrain    queued (PENDING)  waiting 1:05"
    view.scheduler_state("RUNNING")
    assert view.queued is None and view.started > 65.0
