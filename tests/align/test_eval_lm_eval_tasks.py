"""A user's own lm-evaluation-harness task YAMLs (`eval.lm_eval`): the eval stage runs them with
lm-eval from their directory, offline, and the scores equal the built-in backend's on the same
prompts and files; the directory index validate reads (`specc.evaltasks.task_yamls`) sees what
lm-eval sees."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from align_helpers import offline_eval_model, tokenizer_path  # noqa: F401
from specc.evaltasks.task_yamls import data_problem, read_task_directory

BASE = """\
output_type: multiple_choice
test_split: test
fewshot_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
"""
"""An include-only template (no `task:`): the prompt of specc's `multiple_choice` format, few-shot
examples drawn from the scored split as the built-in draws them when no `fewshot_path` is given."""
TASK = """\
include: _mc_template.yaml
task: my_arith
tag: my_suite
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/arith.jsonl
"""
"""The task: its data path is relative to the include directory."""


def write_task_directory(root: Path, data: Path) -> Path:
    (root / "data").mkdir(parents=True)
    shutil.copy(data, root / "data" / "arith.jsonl")
    (root / "_mc_template.yaml").write_text(BASE)
    (root / "arith.yaml").write_text(TASK)
    return root


def test_directory_index_follows_includes_tags_and_local_data(tmp_path):
    rows = [{"question": "1 + 1 =", "choices": ["2", "3"], "answer": 0}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = write_task_directory(tmp_path / "tasks", data)
    (root / "suite.yaml").write_text("group: my_group\ntask: [my_arith, hellaswag]\n")
    (root / "broken.yaml").write_text('task: broken\ndoc_to_text: "Q: {{question}}\n')
    (root / "hub.yaml").write_text("task: from_hub\ndataset_path: Rowan/hellaswag\n")

    directory = read_task_directory(root)
    assert directory.names() == ["from_hub", "my_arith", "my_group", "my_suite"]
    config = directory.tasks["my_arith"][1]
    assert config["output_type"] == "multiple_choice" and config["task"] == "my_arith"  # include merged
    assert [p.split(": ")[0] for p in directory.problems] == [f"{root / 'broken.yaml'}:3:1"]
    assert directory.tasks_of("my_suite") == ([("my_arith", config)], [])
    assert directory.tasks_of("my_group") == ([("my_arith", config)], ["hellaswag"])
    assert data_problem(config, root) is None
    assert "Hugging Face Hub" in data_problem(directory.tasks["from_hub"][1], root)
    (root / "data" / "arith.jsonl").unlink()
    assert "matches nothing" in data_problem(config, root)


def test_directory_index_survives_odd_yaml_values_and_checks_function_references(tmp_path):
    """A scalar `tag`, non-mapping `dataset_kwargs` or non-path `data_dir` is a finding, not a
    crash; a `!function` whose module file is missing or lacks the function is an unreadable YAML
    (lm-eval 0.4.13 fails resolving it), one the local utils.py defines passes."""
    root = tmp_path / "tasks"
    root.mkdir()
    (root / "tagged.yaml").write_text("task: tagged\ntag: 5\n")
    (root / "kwargs.yaml").write_text("task: kwargs\ndataset_path: json\ndataset_kwargs: [1]\n")
    (root / "datadir.yaml").write_text("task: datadir\ndataset_path: json\ndataset_kwargs: {data_dir: 5, data_files: x}\n")
    (root / "fn.yaml").write_text("task: fn\nprocess_docs: !function utils.process_docs\n")
    (root / "nofn.yaml").write_text("task: nofn\nprocess_docs: !function utils.missing\n")
    (root / "nomod.yaml").write_text("task: nomod\nprocess_docs: !function not_a_module_here.f\n")
    (root / "utils.py").write_text("import json\n\ndef process_docs(docs):\n    return docs\n")
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]'] + [
        f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    (root / "aliases.yaml").write_text("\n".join(levels) + "\ntask: aliases\nself: &s [1, *s]\n")  # 10^9 leaves

    directory = read_task_directory(root)
    assert directory.tags == {"5": ["tagged"]}
    assert "keyword arguments" in data_problem(directory.tasks["kwargs"][1], root)
    assert "not a path" in data_problem(directory.tasks["datadir"][1], root)
    assert "fn" in directory.tasks and "nofn" not in directory.tasks and "nomod" not in directory.tasks
    assert "aliases" in directory.tasks  # walked once per shared node, not per expanded leaf
    problems = "\n".join(directory.problems)
    assert "utils.py defines no `missing`" in problems
    assert "no not_a_module_here.py next to the YAML" in problems


def _run(run_dir: Path, evaluation: dict) -> dict:
    from specc.runtime.evaluate.stage import run as run_eval

    (run_dir / "tokenize").mkdir(parents=True)
    shutil.copy(run_dir.parent / "tokenizer.json", run_dir / "tokenize" / "tokenizer.json")
    shutil.copytree(run_dir.parent / "model", run_dir / "pretrain" / "final")
    run_eval({"stage": "eval", "run_dir": str(run_dir),
              "params": {"eval": evaluation, "checkpoints": {"pretrain": "pretrain/final"},
                         "tokenizer": "tokenize/tokenizer.json"}})
    rows = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    return {(r["task"], r["metric"]): r for r in rows}


@pytest.mark.slow  # builds a tiny model and runs lm-evaluation-harness (~10 s)
def test_user_task_yaml_scores_as_the_builtin_format(tmp_path, tokenizer_path, monkeypatch):  # noqa: F811
    pytest.importorskip("lm_eval")
    from specc.runtime.evaluate.tiny import write_tiny_tasks

    offline_eval_model(tmp_path, tokenizer_path, monkeypatch)
    files = write_tiny_tasks(tmp_path / "tiny", seed=2, num_examples=16)
    root = write_task_directory(tmp_path / "my_tasks", files["mc_arithmetic"])

    builtin = _run(tmp_path / "builtin", {"backend": "builtin", "num_fewshot": 2, "tasks": [
        {"name": "my_arith", "type": "multiple_choice", "path": str(files["mc_arithmetic"])}]})
    included = _run(tmp_path / "included", {"backend": "lm_eval", "batch_size": 16, "lm_eval": {
        "include_path": str(root), "tasks": ["my_suite"], "num_fewshot": 2}})
    for metric in ("acc", "acc_norm"):
        ours, theirs = builtin[("my_arith", metric)], included[("my_arith", metric)]
        assert theirs["count"] == ours["count"] == 16
        assert math.isclose(ours["value"], theirs["value"], abs_tol=1e-9), (metric, ours, theirs)
        assert math.isclose(ours["stderr"], theirs["stderr"], rel_tol=1e-6), (metric, ours, theirs)
    # by hand, from the log-likelihoods lm-eval logged: acc = mean of [argmax == gold]
    samples = [json.loads(line) for line in
               (tmp_path / "included" / "eval" / "samples" / "pretrain--my_arith.jsonl").read_text().splitlines()]
    picks = [max(range(len(s["resps"])), key=lambda i: float(s["resps"][i][0][0])) == int(s["target"])
             for s in samples]
    assert len(picks) == 16 and math.isclose(sum(picks) / 16, included[("my_arith", "acc")]["value"])
    assert 0 < sum(picks) < 16  # random weights: a score that can differ between prompts
    # the same prompt as the built-in's (the user's template, the data read from the include directory)
    builtin_samples = (tmp_path / "builtin" / "eval" / "samples" / "pretrain--my_arith.jsonl").read_text().splitlines()
    assert [s["arguments"][0][0] for s in samples] == [json.loads(line)["context"] for line in builtin_samples]


SPEC = """\
name: case
model: {num_layers: 2, hidden_size: 64, num_heads: 4, ffn_hidden_size: 128, vocab_size: 512, max_seq_len: 128}
schedule: {lr: 1e-3, seq_len: 128, global_batch_size: 8, steps: 100, checkpoint_interval: 50}
tokenizer: {vocab_size: 512}
corpus: {sources: [{type: synthetic, name: prose, num_documents: 100}]}
eval:
  backend: lm_eval
  lm_eval: {include_path: my_tasks, tasks: [my_arith, my_suite]}
"""


def test_validate_accepts_the_directory_and_the_bundle_names_it_absolutely(tmp_path, capsys):
    import yaml

    from specc.cli import main
    from specc.emit.configs.evaluate import build_eval_config
    from specc.spec.root import Spec

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"question": "1 + 1 =", "choices": ["2", "3"], "answer": 0}) + "\n")
    write_task_directory(tmp_path / "my_tasks", data)
    (tmp_path / "spec.yaml").write_text(SPEC)
    assert main(["validate", str(tmp_path / "spec.yaml")]) == 0, capsys.readouterr()
    config = build_eval_config(Spec.model_validate(yaml.safe_load(SPEC)), str(tmp_path))
    assert config["eval"]["lm_eval"] == {"include_path": str(tmp_path / "my_tasks"), "tasks": ["my_arith", "my_suite"],
                                         "num_fewshot": None, "limit": None}
    (tmp_path / "my_tasks" / "data" / "arith.jsonl").unlink()  # the task's data gone: R324 at validate
    assert main(["validate", str(tmp_path / "spec.yaml")]) == 1
    assert "error[R324] eval.lm_eval.tasks[0]: task `my_arith`" in capsys.readouterr().out
