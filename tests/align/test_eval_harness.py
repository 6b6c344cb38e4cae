"""The evaluation harness: scores equal brute-force log-likelihoods, prompts, answer extraction,
standard errors, and the `eval` stage end to end (including resuming from finished parts)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from align_helpers import codec, one_cpu_thread, pretrained, run_dir, tiny_model_spec, tokenizer_path  # noqa: F401
from specc.runtime.evaluate import harness
from specc.runtime.evaluate.stage import run as run_eval
from specc.runtime.evaluate.tasks import Example, extract_answer, fewshot_prompt, load_examples, reference_answer
from specc.runtime.evaluate.tiny import GENERATIVE_PATTERN, write_tiny_tasks
from specc.runtime.infer.scoring import continuation_scores, pad_pairs


@pytest.mark.slow  # the pretrained fixture (~70 s)
def test_padded_batch_scores_equal_unpadded_forward(pretrained, codec):
    pairs = [(codec.encode("Question: What is 2 plus 3?\nAnswer:"), codec.encode(" 5")),
             (codec.encode("Hi"), codec.encode(" there, the cat walks to the river."))]
    with torch.no_grad():
        batched, counts, _ = continuation_scores(pretrained, pad_pairs(pairs, codec.pad_id, 128))
    for (context, continuation), score, count in zip(pairs, batched, counts):
        with torch.no_grad():
            logits = pretrained(torch.tensor([context + continuation[:-1]]))[0].log_softmax(-1)
        expected = sum(float(logits[len(context) - 1 + i, t]) for i, t in enumerate(continuation))
        assert math.isclose(float(score), expected, rel_tol=1e-5, abs_tol=1e-5)
        assert int(count) == len(continuation)


def test_fewshot_prompt_uses_other_examples_deterministically():
    examples = [Example(f"q{i}", f"a{i}") for i in range(6)]
    prompt = fewshot_prompt(examples, 2, 3)
    parts = prompt.split("\n\n")
    assert len(parts) == 4 and parts[-1] == "Question: q2\nAnswer:"
    assert all("q2" not in part for part in parts[:-1])
    assert prompt == fewshot_prompt(examples, 2, 3)
    assert fewshot_prompt(examples, 2, 0) == "Question: q2\nAnswer:"


def test_answer_extraction():
    gsm = r"#### (\-?[0-9.,]+)"
    assert extract_answer("so 3 + 4 = 7\n#### 1,007.", gsm) == "1007"
    assert extract_answer("no marker here", gsm) is None
    assert reference_answer("She has 12 apples.\n#### 12", gsm) == "12"
    assert extract_answer(" 12 and then 13", GENERATIVE_PATTERN) == "12"
    assert extract_answer(" Paris.\nQuestion: next", None) == "Paris"


def test_standard_error_is_sample_std_over_sqrt_n():
    mean, stderr = harness.mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75
    assert math.isclose(stderr, math.sqrt(0.75 * 0.25 / 3))


def test_acc_norm_divides_by_the_characters_of_the_choice_as_lm_eval_does():
    # Per character of the choice: -1.0/1 < -1.9/2, so the second choice wins. Dividing by the
    # bytes of " " + choice (specc's old rule) would pick the first: -1.0/2 > -1.9/3.
    assert harness.choose([-1.0, -1.9], ("a", "bb")) == (0, 1)
    # Characters, not UTF-8 bytes: "éé" is 2 characters (4 bytes); per byte the first would win.
    assert harness.choose([-2.2, -2.0], ("éé", "xx")) == (1, 1)
    assert harness.choose([-2.0, -2.2], ("xx", "éé")) == (0, 0)
    assert harness.choose([-3.0, -4.4], ("ab", "éé")) == (0, 0)
    assert harness.choose([-3.0, -2.8], ("abc", "éé")) == (1, 0)


def test_rolling_windows_predict_every_token_once_with_full_context():
    windows = harness.rolling_windows(list(range(1, 8)), 0, 3)
    assert windows == [([0], [1, 2, 3]), ([1, 2, 3], [4, 5, 6]), ([4, 5, 6], [7])]
    assert harness.rolling_windows([], 0, 3) == []
    assert harness.word_count("two  words\nthree") == 3


def test_perplexity_scores_each_document_after_eos_and_reports_bits_per_byte(codec):
    from specc.runtime.train.model import build_model

    model = build_model(tiny_model_spec(max_seq_len=8), seed=0).eval()
    texts = ["the cat walks to the river and back again", "Grüße, 東京!"]
    result = harness.perplexity(model, codec, texts, batch_size=3)
    expected_nll, expected_tokens = 0.0, 0
    for text in texts:  # brute force: every token of every document, at most 8 tokens of context
        stream = [codec.eos_id] + codec.encode(text)
        for position in range(1, len(stream)):
            context = stream[max(0, position - 8):position]
            with torch.no_grad():
                logits = model(torch.tensor([context]))[0, -1].log_softmax(-1)
            expected_nll -= float(logits[stream[position]])
            expected_tokens += 1
    assert result["tokens"] == expected_tokens
    num_bytes = sum(len(t.encode()) for t in texts)
    assert result["bytes"] == num_bytes and result["words"] == 9 + 2
    assert math.isclose(result["nll"] * expected_tokens, expected_nll, rel_tol=1e-4)
    assert math.isclose(result["bits_per_byte"], expected_nll / num_bytes / math.log(2), rel_tol=1e-4)
    assert math.isclose(result["byte_perplexity"], 2 ** result["bits_per_byte"], rel_tol=1e-6)
    assert math.isclose(math.log(result["word_perplexity"]) * 11, expected_nll, rel_tol=1e-4)


def test_multiple_choice_labels_by_index_letter_or_text(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [{"question": "q", "choices": ["x", "y", "z"], "answer": answer} for answer in (1, "B", "y")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.label for e in load_examples(path, "multiple_choice")] == [1, 1, 1]
    path.write_text(json.dumps({"question": "q", "choices": ["x"], "answer": 4}) + "\n")
    with pytest.raises(ValueError, match="t.jsonl:1: answer 4"):
        load_examples(path, "multiple_choice")


def eval_config(run_dir, tasks_dir, files):
    evaluation = {
        "perplexity": [{"name": "heldout", "path": str(files["heldout"])}],
        "tasks": [
            {"name": "mc_arithmetic", "type": "multiple_choice", "path": str(files["mc_arithmetic"])},
            {"name": "mc_opposites", "type": "multiple_choice", "path": str(files["mc_opposites"]), "num_fewshot": 2},
            {"name": "gen_arithmetic", "type": "generative", "path": str(files["gen_arithmetic"]),
             "answer_pattern": GENERATIVE_PATTERN, "max_new_tokens": 6, "limit": 12},
        ],
        "num_fewshot": 1, "batch_size": 16}
    return {"stage": "eval", "run_dir": str(run_dir),
            "params": {"eval": evaluation, "checkpoints": {"pretrain": "pretrain/final"},
                       "tokenizer": "tokenize/tokenizer.json"}}


@pytest.mark.slow  # the pretrained fixture and the eval stage
def test_eval_stage_runs_resumes_and_beats_chance(run_dir):
    files = write_tiny_tasks(run_dir / "tasks", seed=1)
    config = eval_config(run_dir, run_dir / "tasks", files)
    run_eval(config)
    results = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    by_key = {(r["task"], r["metric"]): r for r in results}
    assert set(by_key) == {("heldout", "perplexity"), ("heldout", "word_perplexity"), ("heldout", "byte_perplexity"),
                           ("heldout", "bits_per_byte"), ("mc_arithmetic", "acc"), ("mc_arithmetic", "acc_norm"),
                           ("mc_opposites", "acc"), ("mc_opposites", "acc_norm"), ("gen_arithmetic", "exact_match")}
    assert by_key[("mc_opposites", "acc")]["value"] > 0.5  # chance is 0.25 with four choices
    assert 1.0 < by_key[("heldout", "perplexity")]["value"] < 384
    assert by_key[("gen_arithmetic", "exact_match")]["count"] == 12
    table = (run_dir / "eval" / "results.md").read_text()
    assert "| pretrain | mc_opposites | acc |" in table
    samples = (run_dir / "eval" / "samples" / "pretrain--gen_arithmetic.jsonl").read_text().splitlines()
    assert len(samples) == 12
    # A killed run keeps its finished parts: drop one part and the success marker, rerun, same table.
    (run_dir / "eval" / "_SUCCESS.json").unlink()
    (run_dir / "eval" / "parts" / "pretrain--mc_arithmetic.json").unlink()
    run_eval(config)
    assert json.loads((run_dir / "eval" / "results.json").read_text())["results"] == results
