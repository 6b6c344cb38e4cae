"""The built-in harness's reading of a library format (`specc.evaltasks`): few-shot contexts,
answer filters and exact match, each as lm-evaluation-harness 0.4.13 does it, so that both
backends score the same requests. Torch-free.

- Context (lm_eval/api/task.py, ConfigurableTask.fewshot_context / build_qa_turn): the
  document's `description`, then each example as `query + target_delimiter + answer +
  fewshot_delimiter`, then the `query` of the scored document; the continuation of a choice is
  `target_delimiter + choice`.
- Few-shot examples (lm_eval/api/samplers.py): `default` draws `k + 1` documents from the pool
  with one `random.Random(1234)` shared by the task's documents in order (the evaluator's
  `fewshot_random_seed`), drops the scored document (only when the pool is the scored file
  itself) and keeps the first k; `first_n` takes the pool's first k (without the scored document).
- Generation answers (lm_eval/filters/extraction.py RegexFilter, lm_eval/api/metrics.py
  exact_match_hf_evaluate): a regex's match (`group_select`-th of all matches, the first
  non-empty group of a tuple), stripped, else `[invalid]`; exact match after removing
  `regexes_to_ignore` from both sides and optionally lower-casing.
"""

from __future__ import annotations

import random
import re

from specc.evaltasks import AnswerFilter, Recipe

FEWSHOT_SEED = 1234
"""lm_eval.defaults.DEFAULT_OTHER_SEED: simple_evaluate's fewshot_random_seed."""


def answer_text(document: dict) -> str:
    """What a solved example shows after its query: the right choice, or the reference."""
    return document["choices"][document["gold"]] if "choices" in document else document["target"]


def fewshot_contexts(documents: list[dict], pool: list[dict], k: int, recipe: Recipe, pool_is_scored: bool,
                     limit: int | None = None) -> list[str]:
    """The prompt of each of the first `limit` documents with k solved examples from `pool`."""
    scored = documents[:limit] if limit else documents
    rng = random.Random(FEWSHOT_SEED)
    contexts = []
    for document in scored:
        shots: list[dict] = []
        if k > 0:
            if recipe.sampler == "first_n":
                candidates = [d for d in pool if d != document] if pool_is_scored else pool
                if k > len(candidates):
                    raise ValueError(f"{k} few-shot examples requested, the pool has {len(candidates)}")
                shots = candidates[:k]
            elif pool_is_scored:
                shots = [d for d in rng.sample(pool, k + 1) if d != document][:k]
                if len(shots) < k:  # the pool holds copies of the document: draw again without them
                    shots = rng.sample([d for d in pool if d != document], k)
            else:
                shots = rng.sample(pool, k)
        text = document.get("description", "") or ""
        for shot in shots:
            text += shot["query"] + recipe.target_delimiter + answer_text(shot) + recipe.fewshot_delimiter
        contexts.append(text + document["query"])
    return contexts


def apply_filter(generation: str, answer_filter: AnswerFilter) -> str:
    matches = re.findall(answer_filter.pattern, generation)
    if not matches:
        return answer_filter.fallback
    match = matches[answer_filter.group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else answer_filter.fallback
    return match.strip()


def exact_match(prediction: str, reference: str, recipe: Recipe) -> float:
    for pattern in recipe.regexes_to_ignore:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if recipe.ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    return float(prediction == reference)


def truncate_at_stops(text: str, until: tuple[str, ...]) -> str:
    """lm_eval/models/utils.py postprocess_generated_text: cut at each stop string in turn."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
