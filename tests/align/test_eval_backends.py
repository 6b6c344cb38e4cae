"""The two evaluation backends agree: the `eval` stage scores every library format (HellaSwag-, MMLU-,
ARC-, GSM8K-style fixtures, specc's own multiple choice) and a perplexity set with the built-in
harness and with lm-evaluation-harness on the same tiny model, and gets the same numbers.

The model has random weights (seeded): its log-likelihoods are distinct, so any difference in
prompts, few-shot examples, tokenisation of the context/continuation split, truncation,
length normalisation, stop strings, answer filters or metrics shows as a different pick on some
item. Both backends run the same forward code, so the same requests give the same floats."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from align_helpers import codec, offline_eval_model, one_cpu_thread, tiny_model_spec, tokenizer_path  # noqa: F401
from specc.evaltasks import FIXTURES, FORMATS

TASKS = [
    {"name": "hellaswag", "type": "hellaswag", "path": str(FIXTURES / "hellaswag.jsonl"), "num_fewshot": 2},
    {"name": "mmlu", "type": "mmlu", "path": str(FIXTURES / "mmlu.jsonl"), "num_fewshot": 3},
    {"name": "arc", "type": "arc", "path": str(FIXTURES / "arc.jsonl"), "fewshot_path": str(FIXTURES / "arc.jsonl")},
    {"name": "gsm8k", "type": "gsm8k", "path": str(FIXTURES / "gsm8k.jsonl"), "num_fewshot": 2, "max_new_tokens": 12,
     "limit": 6},
    {"name": "qa_choice", "type": "multiple_choice", "path": "mc_opposites.jsonl"},
]


def _run(run_dir, backend: str) -> dict:
    from specc.runtime.evaluate.stage import run as run_eval

    tasks = [{**t, "path": str(run_dir / "tasks" / t["path"])} if t["name"] == "qa_choice" else t for t in TASKS]
    evaluation = {"backend": backend, "tasks": tasks, "num_fewshot": 1, "batch_size": 16,
                  "perplexity": [{"name": "heldout", "path": str(run_dir / "tasks" / "heldout.jsonl"),
                                  "max_documents": 6}]}
    out = run_dir / backend
    (out / "tokenize").mkdir(parents=True)
    shutil.copy(run_dir / "tokenizer.json", out / "tokenize" / "tokenizer.json")
    shutil.copytree(run_dir / "model", out / "pretrain" / "final")
    run_eval({"stage": "eval", "run_dir": str(out),
              "params": {"eval": evaluation, "checkpoints": {"pretrain": "pretrain/final"},
                         "tokenizer": "tokenize/tokenizer.json"}})
    rows = json.loads((out / "eval" / "results.json").read_text())["results"]
    return {(r["task"], r["metric"]): r for r in rows}


def _samples(run_dir, task: str) -> list[dict]:
    path = run_dir / "eval" / "samples" / f"pretrain--{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # builds a model and runs lm-evaluation-harness (~20 s)
def test_builtin_and_lm_eval_backends_agree_on_every_format(tmp_path, tokenizer_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from specc.runtime.evaluate.tiny import write_tiny_tasks

    offline_eval_model(tmp_path, tokenizer_path, monkeypatch)
    write_tiny_tasks(tmp_path / "tasks", seed=2, num_examples=16)

    builtin, lm_eval = _run(tmp_path, "builtin"), _run(tmp_path, "lm_eval")
    expected = {(t["name"], m) for t in TASKS for m in FORMATS[t["type"]].recipe.metrics if m != "exact_match"}
    expected |= {("gsm8k", "exact_match"), ("gsm8k", "exact_match_flexible")}
    expected |= {("heldout", m) for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")}
    assert expected <= set(builtin) and expected <= set(lm_eval)
    for key in sorted(expected):
        ours, theirs = builtin[key], lm_eval[key]
        assert ours["count"] == theirs["count"] or key[0] == "heldout", key
        assert math.isclose(ours["value"], theirs["value"], rel_tol=1e-5, abs_tol=1e-9), (key, ours, theirs)
        if theirs["stderr"] is not None:
            assert math.isclose(ours["stderr"], theirs["stderr"], rel_tol=1e-5, abs_tol=1e-9), (key, ours, theirs)
    # Not only the same scores: the same log-likelihood for every choice, the same generations.
    for task in TASKS:
        ours, theirs = (_samples(tmp_path / backend, task["name"]) for backend in ("builtin", "lm_eval"))
        assert len(ours) == len(theirs) == builtin[(task["name"], FORMATS[task["type"]].recipe.metrics[0])]["count"]
        for mine, reference in zip(ours, theirs):
            assert mine["context"] == reference["context"]  # description, few-shot examples, delimiters
            if "loglikelihoods" in mine:
                assert mine["gold"] == reference["gold"]
                assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
                           for a, b in zip(mine["loglikelihoods"], reference["loglikelihoods"], strict=True))
            else:
                assert mine == reference
    # the task YAML lm-eval ran is left for the `lm_eval` command (--include_path)
    assert "dataset_path: json" in (tmp_path / "lm_eval" / "eval" / "lm_eval" / "tasks" / "arc.yaml").read_text()


def test_context_continuation_split_equals_lm_eval(codec):
    """The built-in splits (context, continuation) into tokens as lm-eval's TemplateLM does: trailing
    spaces move to the continuation, tokens merging across the boundary count as continuation,
    an empty context scores after the end-of-document token."""
    pytest.importorskip("lm_eval")
    from specc.runtime.evaluate.harness import encode_pair
    from specc.runtime.evaluate.lm_eval_backend import specc_lm_class
    from specc.runtime.train.model import build_model

    lm = specc_lm_class()(build_model(tiny_model_spec(), seed=0), codec, batch_size=4)
    pairs = [("Question: What is 2 plus 3?\nAnswer:", " 5"), ("Answer: ", "7"), ("The cat walks", "ed home"),
             ("Question:\n", "\nx"), ("ab", "cd"), ("", " hello there")]
    for context, continuation in pairs:
        if context:
            expected = lm._encode_pair(context, continuation)
        else:
            tokens = lm.tok_encode(continuation, add_special_tokens=False)
            expected = ([lm.prefix_token_id], tokens)
        assert encode_pair(codec, context, continuation) == expected, (context, continuation)
    # the split differs from encoding the two parts apart for at least one pair (so the test can fail)
    assert any(encode_pair(codec, c, k) != (codec.encode(c), codec.encode(k)) for c, k in pairs if c)


def test_a_tokenizer_that_adds_bos_gets_it_before_the_context_only(codec):
    """BOS handling follows the tokenizer, as lm-eval's `hf` model does: a post-processor that
    prepends a BOS puts it before every context, never inside the scored continuation."""
    pytest.importorskip("lm_eval")
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    from specc.runtime.evaluate.harness import encode_pair
    from specc.runtime.evaluate.lm_eval_backend import specc_lm_class
    from specc.runtime.infer.weights import TextCodec
    from specc.runtime.train.model import build_model

    tokenizer = Tokenizer.from_str(codec.tokenizer.to_str())
    bos = codec.pad_id  # any special token serves as the BOS here
    tokenizer.post_processor = TemplateProcessing(single="<|pad|> $A", special_tokens=[("<|pad|>", bos)])
    with_bos = TextCodec(tokenizer, codec.eos_id, codec.pad_id)
    lm = specc_lm_class()(build_model(tiny_model_spec(), seed=0), with_bos, batch_size=4)
    context, continuation = encode_pair(with_bos, "Question: What is 2 plus 3?\nAnswer:", " 5")
    assert context[0] == bos and bos not in continuation and continuation == codec.encode(" 5")
    assert (context, continuation) == lm._encode_pair("Question: What is 2 plus 3?\nAnswer:", " 5")
    assert encode_pair(with_bos, "", " 5") == ([codec.eos_id], codec.encode(" 5"))
