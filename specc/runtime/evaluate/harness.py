"""Scoring: held-out perplexity, multiple choice by log-likelihood, generative exact match.

Accuracy is reported with the standard error of the mean over examples,
sqrt(p (1 - p) / (n - 1)) (the sample standard deviation over sqrt(n), as
lm-evaluation-harness reports it). Multiple-choice tasks report `acc` (highest summed
log-likelihood of the continuation) and `acc_norm` (divided by the continuation's length in
bytes, which removes the bias toward short choices; Gao et al. 2021, lm-evaluation-harness).
"""

from __future__ import annotations

import math
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


@torch.no_grad()
def perplexity(model: torch.nn.Module, codec: TextCodec, texts: list[str], batch_size: int) -> dict:
    """Token-level perplexity of the documents, each followed by EOS, read as one stream in
    non-overlapping windows of max_seq_len + 1 tokens (every token but the first is predicted)."""
    stream: list[int] = []
    for text in texts:
        stream.extend(codec.encode(text) + [codec.eos_id])
    window = model.spec.max_seq_len
    pieces = [stream[start:start + window + 1] for start in range(0, len(stream) - 1, window)]
    pieces = [p for p in pieces if len(p) >= 2]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start:start + batch_size]
        batch = pad_pairs([(p[:1], p[1:]) for p in chunk], codec.pad_id, window)
        logprob, count, _ = continuation_scores(model, batch)
        total_nll -= float(logprob.sum())
        total_tokens += int(count.sum())
    if total_tokens == 0:
        raise ValueError("perplexity set has no tokens")
    return {"nll": total_nll / total_tokens, "perplexity": math.exp(total_nll / total_tokens),
            "tokens": total_tokens, "documents": len(texts)}


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
        lengths = [len(f" {choice}".encode()) for choice in example.choices]
        acc.append(float(max(range(len(scores)), key=scores.__getitem__) == example.label))
        normalised = [s / n for s, n in zip(scores, lengths)]
        acc_norm.append(float(max(range(len(scores)), key=normalised.__getitem__) == example.label))
    return acc, acc_norm


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

