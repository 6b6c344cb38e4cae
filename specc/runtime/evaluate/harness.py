"""Scoring: held-out perplexity, multiple choice by log-likelihood, generative exact match.

Accuracy is reported with the standard error of the mean over examples,
sqrt(p (1 - p) / (n - 1)) (the sample standard deviation over sqrt(n), as
lm-evaluation-harness reports it). Multiple-choice tasks report `acc` (highest summed
log-likelihood of the continuation) and `acc_norm`: the log-likelihood divided by the number of
characters of the choice, without the space that joins it to the prompt, which removes the bias
toward short choices. That is lm-evaluation-harness's definition (`lm_eval/api/task.py`,
`ConfigurableTask.process_results`: `completion_len = [len(i) for i in choices]`,
`pred_norm = argmax(lls / completion_len)`), so the figure compares with published ones.

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
    pieces = [p for text in texts for p in rolling_windows(codec.encode(text), codec.eos_id, window)]
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


@torch.no_grad()
def multiple_choice(model: torch.nn.Module, codec: TextCodec, examples: list[Example], num_fewshot: int,
                    batch_size: int, limit: int | None = None) -> tuple[list[float], list[float]]:
    """Per-example (acc, acc_norm) as 0/1 lists."""
    pairs, owners = [], []
    scored = examples[:limit] if limit else examples
    for index, example in enumerate(scored):
        context = codec.encode(fewshot_prompt(examples, index, num_fewshot))
        for choice in example.choices:
            pairs.append((context, codec.encode(f" {choice}")))
            owners.append(index)
    logprobs: list[float] = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_pairs(pairs[start:start + batch_size], codec.pad_id, model.spec.max_seq_len)
        logprobs.extend(continuation_scores(model, batch)[0].tolist())
    acc, acc_norm, cursor = [], [], 0
    for example in scored:
        scores = logprobs[cursor:cursor + len(example.choices)]
        cursor += len(example.choices)
        picked, picked_norm = choose(scores, example.choices)
        acc.append(float(picked == example.label))
        acc_norm.append(float(picked_norm == example.label))
    return acc, acc_norm


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

