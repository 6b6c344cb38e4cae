"""Alignment data in the formats TRL documents, from jsonl, parquet and `datasets` `save_to_disk`
directories: every format of the same data gives the same tokens, a stage's `fields` renames
columns, bad rows are located errors, and SFT and DPO train a step from parquet and Arrow data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from align_helpers import codec, one_cpu_thread, pretrained, run_dir, tokenizer_path  # noqa: F401 (fixtures)
from specc.runtime.align.chat import load_template
from specc.runtime.align.data import load_preferences, load_prompts, load_sft
from specc.runtime.align.records import read_rows
from specc.runtime.align.stage import run as run_stage
from specc.integrity import StageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_helpers import write_jsonl, write_saved_dataset  # noqa: E402

QUESTIONS = [f"What is {i} plus one?" for i in range(8)]
ANSWERS = [f"It is {i + 1}." for i in range(8)]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write_formats(base: Path, columns: dict[str, list]) -> list[Path]:
    """The same rows as jsonl, one parquet file, and a save_to_disk directory."""
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    write_jsonl(base / "rows.jsonl", rows)
    pq.write_table(pa.table(columns), base / "rows.parquet")
    write_saved_dataset(base / "saved", columns, shards=2)
    return [base / "rows.jsonl", base / "rows.parquet", base / "saved"]


def test_sft_layouts_give_the_same_tokens_in_every_format(tmp_path, codec):
    template = load_template("chatml")
    conversations = [_user(q) + _assistant(a) for q, a in zip(QUESTIONS, ANSWERS)]
    expected = None
    for name, columns in {"messages": {"messages": conversations},
                          "prompt_completion": {"prompt": QUESTIONS, "completion": ANSWERS},
                          "conversational_prompt_completion": {"prompt": [_user(q) for q in QUESTIONS],
                                                               "completion": [_assistant(a) for a in ANSWERS]},
                          "prompt_response": {"prompt": QUESTIONS, "response": ANSWERS}}.items():
        (tmp_path / name).mkdir()
        for path in write_formats(tmp_path / name, columns):
            examples = [(e.tokens, e.loss_mask) for e in load_sft(path, template, codec)]
            expected = expected or examples
            assert examples == expected, (name, path.name)
    text = load_sft(write_formats(tmp_path, {"text": ANSWERS})[2], template, codec)
    assert [e.tokens for e in text] == [codec.encode(a) + [codec.eos_id] for a in ANSWERS]
    assert all(all(e.loss_mask) for e in text)  # language modeling: every token


def test_preference_layouts_give_the_same_pairs(tmp_path, codec):
    template = load_template("chatml")
    rejected = ["I do not know."] * 8
    layouts = {
        "standard": {"prompt": QUESTIONS, "chosen": ANSWERS, "rejected": rejected},
        "conversational": {"prompt": [_user(q) for q in QUESTIONS], "chosen": [_assistant(a) for a in ANSWERS],
                           "rejected": [_assistant(r) for r in rejected]},
        "implicit_conversational": {"chosen": [_user(q) + _assistant(a) for q, a in zip(QUESTIONS, ANSWERS)],
                                    "rejected": [_user(q) + _assistant(r) for q, r in zip(QUESTIONS, rejected)]},
    }
    expected = None
    for name, columns in layouts.items():
        (tmp_path / name).mkdir()
        for path in write_formats(tmp_path / name, columns):
            pairs = load_preferences(path, template, codec)
            expected = expected or pairs
            assert pairs == expected, (name, path.name)
    assert codec.decode(expected[0].chosen) == "It is 1.<|im_end|>"


def test_implicit_string_prompt_follows_trl(tmp_path):
    """TRL's own example (trl.data_utils.extract_prompt): the space stays with the completions."""
    write_jsonl(tmp_path / "p.jsonl", [{"chosen": "The sky is blue.", "rejected": "The sky is green."}])
    [row] = read_rows(tmp_path / "p.jsonl", "preference")
    assert row == {"prompt": _user("The sky is"), "chosen": " blue.", "rejected": " green."}


def test_fields_rename_columns_and_prompts_read_every_format(tmp_path, codec):
    template = load_template("chatml")
    write_jsonl(tmp_path / "q.jsonl", [{"question": q} for q in QUESTIONS])
    (tmp_path / "p").mkdir()
    expected = load_prompts(write_formats(tmp_path / "p", {"prompt": QUESTIONS})[1], template, codec)
    assert load_prompts(tmp_path / "q.jsonl", template, codec, {"prompt": "question"}) == expected
    assert codec.decode(expected[0]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(("rows", "kind", "message"), [
    ([{"conversations": [{"role": "user", "content": "hi"}]}], "sft",
     r"rows.jsonl:1: no sft layout fits the columns \(conversations\): needs `messages` or `prompt`\+`completion`"),
    ([{"prompt": "a", "chosen": "b"}], "preference", "no preference layout fits"),
    ([{"prompt": 3}], "prompt", "column 'prompt' is int, expected a string or a list of"),
    ([{"messages": "hello"}], "sft", "column 'messages' is string, expected a list of {role, content} messages"),
    ([{"chosen": "Yes.", "rejected": "No."}], "preference", "share no prompt"),
])
def test_bad_rows_are_located(tmp_path, rows, kind, message):
    write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(StageError, match=message):  # one line from the stage runner, no traceback
        list(read_rows(tmp_path / "rows.jsonl", kind))


def _stage_config(run_dir: Path, stage: dict, **extra) -> dict:
    params = {"stage": stage, "init_checkpoint": "pretrain/final", "tokenizer": "tokenize/tokenizer.json",
              "seq_len": 64, "seed": 0, "checkpoint_interval": 5, **extra}
    return {"stage": stage["name"], "run_dir": str(run_dir), "params": params}


def _steps(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / name / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "step" in r]


@pytest.mark.slow  # the pretrained fixture and two alignment stages, one step each
def test_sft_and_dpo_train_a_step_from_saved_datasets_and_parquet(run_dir):
    write_saved_dataset(run_dir / "sft", {"conversations": [_user(q) + _assistant(a)
                                                            for q, a in zip(QUESTIONS, ANSWERS)]})
    sft = {"type": "sft", "name": "sft", "data": str(run_dir / "sft"), "fields": {"messages": "conversations"},
           "lr": 1e-3, "epochs": 1, "batch_size": 8, "packing": False}
    run_stage(_stage_config(run_dir, sft))
    assert len(_steps(run_dir, "sft")) == 1 and _steps(run_dir, "sft")[0]["response_tokens"] > 0
    (run_dir / "prefs").mkdir()
    pq.write_table(pa.table({"prompt": [_user(q) for q in QUESTIONS], "chosen": [_assistant(a) for a in ANSWERS],
                             "rejected": [_assistant("I do not know.")] * 8}), run_dir / "prefs" / "part-0.parquet")
    dpo = {"type": "dpo", "name": "dpo", "data": str(run_dir / "prefs"), "lr": 1e-3, "epochs": 1, "batch_size": 8}
    run_stage(_stage_config(run_dir, dpo, reference_checkpoint="pretrain/final"))
    [step] = _steps(run_dir, "dpo")
    assert step["reward_accuracy"] == 0.0 and step["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference


@pytest.mark.slow  # the pretrained fixture
def test_a_bad_row_stops_the_stage_with_one_located_line(run_dir, capsys):
    from specc.runtime.__main__ import main

    write_jsonl(run_dir / "sft.jsonl", [{"messages": _user("hi") + _assistant("hello")}, {"conversation": []}])
    sft = {"type": "sft", "name": "sft", "data": str(run_dir / "sft.jsonl")}
    (run_dir / "sft.json").write_text(json.dumps(_stage_config(run_dir, sft)))
    assert main([str(run_dir / "sft.json")]) == 1
    error = capsys.readouterr().err
    assert f"specc sft: error: {run_dir / 'sft.jsonl'}:2: no sft layout fits the columns (conversation)" in error
    assert "Traceback" not in error


@pytest.mark.parametrize(("rows", "message"), [
    ([{"messages": None}, {"messages": None}], "column 'messages' is null in every record read"),
    ([{"messages": [{"role": "user"}]}], "column 'messages' is a list of objects some without a `role` or `content`"),
    ([{"messages": []}], "column 'messages' is an empty list"),
])
def test_preflight_names_null_and_malformed_message_columns(tmp_path, rows, message):
    """R281 reads the schema the stage would: a column null in every record fits no layout at run
    time (`_rows` drops nulls), so the pre-flight says so instead of passing it."""
    from specc.runtime.align.records import layout_problem
    from specc.runtime.data.formats import read_schema

    write_jsonl(tmp_path / "rows.jsonl", rows)
    layout, problem = layout_problem(read_schema(tmp_path / "rows.jsonl", "jsonl", "rows.jsonl"), "sft", {})
    assert layout is None and message in problem
