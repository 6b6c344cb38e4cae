"""Scoring: held-out perplexity, multiple choice by log-likelihood, generative exact match.

Accuracy is reported with the standard error of the mean over examples,
sqrt(p (1 - p) / (n - 1)) (the sample standard deviation over sqrt(n), as
lm-evaluation-harness reports it). Multiple-choice tasks report `acc` (highest summed
log-likelihood of the continuation) and `acc_norm`: the log-likelihood divided by the number of
characters of the choice, without the space that joins it to the prompt, which removes the bias
toward short choices. That is lm-evaluation-harness's definition (`lm_eval/api/task.py`,
`ConfigurableTask.process_results`: `completion_len = [len(i) for i in choices]`,
`pred_norm = argmax(lls / completion_len)`), so the figure compares with published ones.

Library-format tasks (`specc.evaltasks`: hellaswag, mmlu, arc, gsm8k, multiple_choice) get their
prompts from `prompts.fewshot_contexts`; the (context, continuation) token split, truncation,
greedy generation with stop strings and the scores here follow lm-evaluation-harness 0.4.13
(`encode_pair`, `generate_text`), so the `lm_eval` backend, which calls the same model code
through `lm_eval_backend.SpeccLM`, gets the same numbers.

Perplexity sets are scored like lm-evaluation-harness's `loglikelihood_rolling` tasks
(wikitext): each document on its own, its first token predicted after the end-of-document token,
every token predicted once in disjoint windows. Reported: token perplexity, word perplexity
(exp of the NLL per whitespace-separated word), byte perplexity (per UTF-8 byte) and bits per
byte (NLL per byte / ln 2); the last two do not depend on the tokenizer, so models with
different vocabularies compare (lm_eval/api/metrics.py: weighted_perplexity, bits_per_byte).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from specc.evaltasks import Recipe
from specc.runtime.evaluate.prompts import apply_filter, exact_match, truncate_at_stops
from specc.runtime.evaluate.tasks import (
    FEWSHOT_SEPARATOR, Example, extract_answer, fewshot_prompt, reference_answer)
from specc.runtime.infer.decode import generate
from specc.runtime.infer.scoring import continuation_scores, pad_pairs
from specc.runtime.infer.weights import TextCodec


@dataclass(frozen=True)
class Score:
    task: str
    metric: str
    value: float
    stderr: float
    count: int

    def as_dict(self) -> dict:
        return {"task": self.task, "metric": self.metric, "value": self.value, "stderr": self.stderr,
                "count": self.count}


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        raise ValueError("no examples were scored")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def rolling_windows(tokens: list[int], prefix_id: int, window: int) -> list[tuple[list[int], list[int]]]:
    """A document as (context, continuation) pairs that predict each of its tokens once, at most
    `window` per pair, each with up to `window` tokens of context before it: the first token
    follows the prefix token, and the last, shorter piece still sees a full window of context
    (lm-evaluation-harness's get_rolling_token_windows with context_len=1)."""
    stream = [prefix_id] + tokens
    return [(stream[max(0, start + 1 - window):start + 1], stream[start + 1:start + 1 + window])
            for start in range(0, len(tokens), window)]


def word_count(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word perplexity: `re.split(r"\\s+", text)`."""
    return len(re.split(r"\s+", text))


@torch.no_grad()
def perplexity(model: torch.nn.Module, codec: TextCodec, texts: list[str], batch_size: int) -> dict:
    """Token, word and byte perplexity and bits per byte of the documents, each scored alone
    after the end-of-document token (see the module docstring)."""
    window = model.spec.max_seq_len
    pieces = [p for text in texts for p in rolling_windows(encode(codec, text), codec.eos_id, window)]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start:start + batch_size]
        batch = pad_pairs(chunk, codec.pad_id, window)
        logprob, count, _ = continuation_scores(model, batch)
        total_nll -= float(logprob.sum())
        total_tokens += int(count.sum())
    if total_tokens == 0:
        raise ValueError("perplexity set has no tokens")
    num_bytes = sum(len(text.encode()) for text in texts)
    num_words = sum(word_count(text) for text in texts)
    return {"nll": total_nll / total_tokens, "perplexity": math.exp(total_nll / total_tokens),
            "word_perplexity": math.exp(total_nll / num_words), "byte_perplexity": math.exp(total_nll / num_bytes),
            "bits_per_byte": total_nll / num_bytes / math.log(2), "tokens": total_tokens, "words": num_words,
            "bytes": num_bytes, "documents": len(texts)}


def encode(codec: TextCodec, text: str, special_tokens: bool = True) -> list[int]:
    """Text as the evaluation feeds it: with the tokenizer's own special tokens (a BOS when its
    post-processor adds one; specc's byte-level BPE adds none), as lm-eval's `hf` model encodes
    (`tokenizer.encode(text)`, add_special_tokens left at the tokenizer's default)."""
    return codec.tokenizer.encode(text, add_special_tokens=special_tokens).ids


def encode_pair(codec: TextCodec, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context, continuation) tokens as lm-eval splits them (lm_eval/api/model.py, TemplateLM
    `loglikelihood` and `_encode_pair`): trailing spaces of the context move to the
    continuation, the pair is encoded whole and cut after the context's tokens, so tokens that
    merge across the boundary are scored as the model reads them; an empty context becomes the
    end-of-document token."""
    if context == "":
        tokens = encode(codec, continuation, special_tokens=False)
        return ([codec.eos_id], tokens) if tokens[0] != codec.eos_id else (tokens[:1], tokens[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(codec, context + continuation)
    context_tokens = encode(codec, context)
    return context_tokens, whole[len(context_tokens):]


@torch.no_grad()
def loglikelihoods(model: torch.nn.Module, codec: TextCodec, pairs: list[tuple[list[int], list[int]]],
                   batch_size: int) -> list[tuple[float, bool]]:
    """(sum of log-probs, whether greedy decoding gives it) of each tokenised continuation."""
    results: list[tuple[float, bool]] = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_pairs(pairs[start:start + batch_size], codec.pad_id, model.spec.max_seq_len)
        logprob, _, greedy = continuation_scores(model, batch)
        results.extend(zip(logprob.tolist(), greedy.tolist()))
    return results


@torch.no_grad()
def multiple_choice(model: torch.nn.Module, codec: TextCodec, documents: list[dict], contexts: list[str],
                    recipe: Recipe, batch_size: int) -> tuple[dict[str, list[float]], list[dict]]:
    """Per-document 0/1 scores for each of the recipe's metrics (`acc`, `acc_norm`), and samples
    with each choice's log-likelihood."""
    pairs = [encode_pair(codec, context, recipe.target_delimiter + choice)
             for document, context in zip(documents, contexts) for choice in document["choices"]]
    scores = [logprob for logprob, _ in loglikelihoods(model, codec, pairs, batch_size)]
    per_metric: dict[str, list[float]] = {"acc": [], "acc_norm": []}
    samples, cursor = [], 0
    for document, context in zip(documents, contexts):
        choices = tuple(document["choices"])
        picked, picked_norm = choose(scores[cursor:cursor + len(choices)], choices)
        samples.append({"context": context, "loglikelihoods": scores[cursor:cursor + len(choices)],
                        "gold": document["gold"]})
        cursor += len(choices)
        per_metric["acc"].append(float(picked == document["gold"]))
        per_metric["acc_norm"].append(float(picked_norm == document["gold"]))
    return {metric: per_metric[metric] for metric in recipe.metrics}, samples


@torch.no_grad()
def generate_text(model: torch.nn.Module, codec: TextCodec, context: str, until: tuple[str, ...],
                  max_new_tokens: int) -> str:
    """Greedy continuation of `context`, cut at the first stop string (lm-eval's generate_until:
    the context keeps its last max_seq_len - max_new_tokens tokens; generation stops at a stop
    string or the end-of-document token)."""
    room = model.spec.max_seq_len - max_new_tokens
    if room <= 0:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in max_seq_len "
                         f"{model.spec.max_seq_len}")
    prompt = encode(codec, context)[-room:]

    def stop(tokens: list[int]) -> bool:
        text = codec.decode(tokens)
        return any(s and s in text for s in until)

    tokens = generate(model, prompt, max_new_tokens, stop_ids=(codec.eos_id,), stop_when=stop).tokens
    return truncate_at_stops(codec.tokenizer.decode([t for t in tokens if t != codec.eos_id]), until)


def generation_scores(documents: list[dict], contexts: list[str], generations: list[str], recipe: Recipe
                      ) -> tuple[dict[str, list[float]], list[dict]]:
    """Exact match per answer filter (`exact_match` for the first, `exact_match_<name>` for the
    others) and the samples."""
    per_metric: dict[str, list[float]] = {}
    samples = []
    for document, context, text in zip(documents, contexts, generations):
        sample = {"context": context, "generation": text, "target": document["target"]}
        for index, answer_filter in enumerate(recipe.filters):
            predicted = apply_filter(text, answer_filter)
            metric = generation_metric(index, answer_filter.name)
            per_metric.setdefault(metric, []).append(exact_match(predicted, document["target"], recipe))
            sample[metric] = predicted
        samples.append(sample)
    return per_metric, samples


def generation_metric(index: int, filter_name: str) -> str:
    """The row name of a filter's exact match: the first filter (GSM8K's strict `#### N`) is the
    published figure, `exact_match`; later ones carry the filter's name."""
    return "exact_match" if index == 0 else "exact_match_" + filter_name.split("-")[0]


def choose(logprobs: list[float], choices: tuple[str, ...]) -> tuple[int, int]:
    """The choice `acc` picks (highest log-likelihood) and the one `acc_norm` picks (highest
    log-likelihood per character of the choice, without the joining space, as
    lm-evaluation-harness divides; an empty choice counts as one character). Ties go to the
    first, as numpy's argmax does."""
    normalised = [score / max(len(choice), 1) for score, choice in zip(logprobs, choices)]
    return (max(range(len(logprobs)), key=logprobs.__getitem__),
            max(range(len(normalised)), key=normalised.__getitem__))


@torch.no_grad()
def generative(model: torch.nn.Module, codec: TextCodec, examples: list[Example], num_fewshot: int,
               answer_pattern: str | None, max_new_tokens: int, limit: int | None = None
               ) -> tuple[list[float], list[dict]]:
    """Per-example exact match (greedy decoding, stopped at a blank line or EOS) and the samples."""
    correct, samples = [], []
    scored = examples[:limit] if limit else examples

    def stop(tokens: list[int]) -> bool:
        return FEWSHOT_SEPARATOR in codec.decode(tokens)

    for index, example in enumerate(scored):
        prompt = codec.encode(fewshot_prompt(examples, index, num_fewshot))
        room = model.spec.max_seq_len - max_new_tokens
        prompt = prompt[-room:] if room > 0 else prompt[-1:]
        tokens = generate(model, prompt, max_new_tokens, stop_ids=(codec.eos_id,), stop_when=stop).tokens
        text = codec.decode([t for t in tokens if t != codec.eos_id]).split(FEWSHOT_SEPARATOR)[0]
        predicted = extract_answer(text, answer_pattern)
        expected = reference_answer(example.answer, answer_pattern)
        correct.append(float(predicted is not None and predicted == expected))
        samples.append({"question": example.question, "generation": text, "predicted": predicted,
                        "expected": expected})
    return correct, samples

