"""The task library reads each benchmark as lm-evaluation-harness's own task config does: the
prompts, choices and gold labels of the fixtures equal what lm-eval's shipped YAML templates and
process_docs produce from the same rows; the built-in's few-shot sampler, answer filters and exact
match equal lm-eval's classes on the same inputs; malformed rows are refused with their line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from specc.evaltasks import FIXTURES, FORMATS, FormatError, load_documents, read_rows
from specc.runtime.evaluate.prompts import FEWSHOT_SEED, apply_filter, exact_match, fewshot_contexts



def _tasks_dir() -> Path:
    """The task configs shipped with lm-eval (the tests that compare against it skip without it)."""
    return Path(pytest.importorskip("lm_eval").__file__).parent / "tasks"


def _lm_eval_yaml(relative: str) -> dict:
    """A task config shipped with lm-eval (its `!function` tags are not needed here)."""
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda _loader, node: None)
    return yaml.load((_tasks_dir() / relative).read_text(), Loader=loader)


def _render(template: str, row: dict):
    from lm_eval.utils import apply_template

    return apply_template(template, row)


def test_every_format_has_a_fixture_that_loads():
    for name in FORMATS:
        if name == "multiple_choice":
            continue
        documents = load_documents([FIXTURES / f"{name}.jsonl"], name)
        assert len(documents) >= 10
        assert all(set(FORMATS[name].fields) <= set(row) for _, row in read_rows(FIXTURES / f"{name}.jsonl"))


def test_prompts_equal_lm_eval_task_templates():
    arc, gsm8k = _lm_eval_yaml("arc/arc_easy.yaml"), _lm_eval_yaml("gsm8k/gsm8k.yaml")
    mmlu = _lm_eval_yaml("mmlu/default/_default_template_yaml")
    for _, row in read_rows(FIXTURES / "arc.jsonl"):
        document = FORMATS["arc"].process(row)
        assert document["query"] == _render(arc["doc_to_text"], row)
        assert document["choices"] == json.loads(json.dumps(eval(_render(arc["doc_to_choice"], row))))  # noqa: S307
        assert document["gold"] == int(_render(arc["doc_to_target"], row))
    for _, row in read_rows(FIXTURES / "gsm8k.jsonl"):
        document = FORMATS["gsm8k"].process(row)
        assert document["query"] == _render(gsm8k["doc_to_text"], row)
        assert document["target"] == _render(gsm8k["doc_to_target"], row)
    for _, row in read_rows(FIXTURES / "mmlu.jsonl"):
        document = FORMATS["mmlu"].process(row)
        assert document["query"] == _render(mmlu["doc_to_text"], row)
        assert document["choices"] == mmlu["doc_to_choice"] and document["gold"] == row["answer"]
        # lm-eval's per-subject YAMLs (mmlu/default/mmlu_<subject>.yaml) carry this description
        subject = _lm_eval_yaml(f"mmlu/default/mmlu_{row['subject']}.yaml")
        assert document["description"] == subject["description"]


@pytest.mark.slow  # imports datasets (~4 s)
def test_hellaswag_documents_equal_lm_eval_process_docs():
    import datasets

    spec = importlib.util.spec_from_file_location("hellaswag_utils", _tasks_dir() / "hellaswag" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    rows = [row for _, row in read_rows(FIXTURES / "hellaswag.jsonl")]
    theirs = utils.process_docs(datasets.Dataset.from_list(rows))
    for row, reference in zip(rows, theirs, strict=True):
        ours = FORMATS["hellaswag"].process(row)
        assert (ours["query"], ours["choices"], ours["gold"]) == (reference["query"], reference["choices"],
                                                                  reference["gold"])
    assert "[title]" not in json.dumps([FORMATS["hellaswag"].process(r) for r in rows])


@pytest.mark.parametrize("sampler", ["default", "first_n"])
def test_fewshot_examples_equal_lm_eval_samplers(sampler):
    _tasks_dir()
    from lm_eval.api.samplers import get_sampler

    documents = load_documents([FIXTURES / "mmlu.jsonl"], "mmlu")
    recipe = FORMATS["mmlu"].recipe.__class__(**{**FORMATS["mmlu"].recipe.__dict__, "sampler": sampler})
    contexts = fewshot_contexts(documents, documents, 3, recipe, pool_is_scored=True)
    theirs = get_sampler(sampler)(list(documents), rnd=None).set_rnd(FEWSHOT_SEED)
    for document, context in zip(documents, contexts):
        shots = theirs.sample(n=3, eval_doc=document)
        expected = document["description"] + "".join(
            s["query"] + " " + s["choices"][s["gold"]] + "\n\n" for s in shots) + document["query"]
        assert context == expected
    # a separate few-shot file (MMLU's dev split): lm-eval passes no eval_doc to exclude
    pool = load_documents([FIXTURES / "arc.jsonl"], "arc")
    separate = fewshot_contexts(documents, pool, 2, recipe, pool_is_scored=False)
    theirs = get_sampler(sampler)(list(pool), rnd=None).set_rnd(FEWSHOT_SEED)
    for document, context in zip(documents, separate):
        shots = theirs.sample(n=2, eval_doc=None)
        assert context == document["description"] + "".join(
            s["query"] + " " + s["choices"][s["gold"]] + "\n\n" for s in shots) + document["query"]


def test_answer_filters_and_exact_match_equal_lm_eval():
    _tasks_dir()
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    recipe = FORMATS["gsm8k"].recipe
    generations = ["so 3 + 4 = 7.\n#### 1,007.", "The answer is $12.50 or 13", "no number", "#### -3", "7 8 9 10"]
    references = ["#### 1007", "x #### 13", "#### 5", "#### -3", "#### 10"]
    for answer_filter in recipe.filters:
        theirs = RegexFilter(answer_filter.pattern, answer_filter.group_select, answer_filter.fallback)
        filtered = [resp[0] for resp in theirs.apply([[g] for g in generations], [{}] * len(generations))]
        assert [apply_filter(g, answer_filter) for g in generations] == filtered
        for prediction, reference in zip(filtered, references):
            expected = exact_match_hf_evaluate([prediction], [reference], regexes_to_ignore=list(recipe.regexes_to_ignore),
                                               ignore_case=True)["exact_match"]
            assert exact_match(prediction, reference, recipe) == expected
    assert apply_filter(generations[0], recipe.filters[0]) == "1,007."
    assert exact_match("1,007.", "#### 1007", recipe) == 1.0


def test_malformed_rows_name_their_line(tmp_path):
    path = tmp_path / "arc.jsonl"
    good = {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "answerKey": "Z"}) + "\n")
    with pytest.raises(FormatError, match=r"arc.jsonl:3: field 'answerKey' = 'Z' is not one of the labels"):
        load_documents([path], "arc")
    with pytest.raises(FormatError, match="missing field 'endings'"):
        FORMATS["hellaswag"].process({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "label": 0})
    with pytest.raises(FormatError, match="should be a non-empty list of strings"):
        FORMATS["mmlu"].process({"question": "q", "choices": ["a", 2], "answer": 0})
    assert FORMATS["mmlu"].process({"question": " q ", "choices": ["x", "y"], "answer": "B"})["gold"] == 1
