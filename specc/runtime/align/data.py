"""Alignment data: SFT examples as (tokens, loss mask), packing, and preference pairs.

All orderings are functions of (seed, epoch), and a step's examples are a function of the
step number, so a resumed stage sees exactly the batches the killed one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from specc.runtime.align.chat import ChatTemplate, as_messages
from specc.runtime.evaluate.tasks import read_jsonl
from specc.runtime.infer.weights import TextCodec


@dataclass(frozen=True)
class SFTExample:
    tokens: list[int]
    loss_mask: list[int]
    """1 where the token is part of a response (the loss is computed only there)."""


def encode_conversation(row: dict, template: ChatTemplate, codec: TextCodec) -> SFTExample:
    tokens, mask = [], []
    for text, is_response in template.spans(as_messages(row)):
        ids = codec.encode(text)
        tokens += ids
        mask += [int(is_response)] * len(ids)
    return SFTExample(tokens, mask)


def load_sft(path: Path, template: ChatTemplate, codec: TextCodec) -> list[SFTExample]:
    examples = [encode_conversation(row, template, codec) for row in read_jsonl(path)]
    examples = [e for e in examples if any(e.loss_mask)]
    if not examples:
        raise ValueError(f"{path}: no example has an assistant response to train on")
    return examples


def pack(examples: list[SFTExample], seq_len: int, pad_id: int, packing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of seq_len + 1 tokens and their loss masks (aligned to the targets).

    With packing, whole examples are placed first-fit-decreasing into rows (Krell et al. 2021,
    "Efficient sequence packing"), so almost no compute goes to padding; attention crosses
    example boundaries inside a row, as in most packed SFT setups. An example longer than a
    row is truncated. Without packing, one example per row.
    """
    width = seq_len + 1
    items = [(e.tokens[:width], e.loss_mask[:width]) for e in examples]
    rows: list[tuple[list[int], list[int]]] = []
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0])) if packing else range(len(items))
    for index in order:
        tokens, mask = items[index]
        target = next((row for row in rows if len(row[0]) + len(tokens) <= width), None) if packing else None
        if target is None:
            rows.append(([], []))
            target = rows[-1]
        target[0].extend(tokens)
        target[1].extend(mask)
    data = torch.full((len(rows), width), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width))
    for r, (tokens, mask) in enumerate(rows):
        data[r, :len(tokens)] = torch.tensor(tokens)
        loss_mask[r, :len(mask)] = torch.tensor(mask, dtype=torch.float)
    return data, loss_mask[:, 1:]


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def load_preferences(path: Path, template: ChatTemplate, codec: TextCodec) -> list[PreferencePair]:
    """`{"prompt", "chosen", "rejected"}` rows; the prompt is rendered as a user turn."""
    pairs = []
    for row in read_jsonl(path):
        messages = as_messages({"prompt": row["prompt"]})
        prompt = template.prompt(messages)
        chosen = codec.encode(row["chosen"] + template.end_of_turn)
        rejected = codec.encode(row["rejected"] + template.end_of_turn)
        pairs.append(PreferencePair(codec.encode(prompt), chosen, rejected))
    return pairs


def load_prompts(path: Path, template: ChatTemplate, codec: TextCodec) -> list[list[int]]:
    return [codec.encode(template.prompt(as_messages({"prompt": row["prompt"]}))) for row in read_jsonl(path)]


def step_indices(num_items: int, batch: int, step: int, seed: int) -> list[int]:
    """Items of optimizer step `step`: consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
    indices = []
    for position in range(step * batch, (step + 1) * batch):
        epoch, k = divmod(position, num_items)
        indices.append(int(_epoch_order(num_items, seed, epoch)[k]))
    return indices


@lru_cache(maxsize=4)
def _epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def total_steps(num_items: int, batch: int, epochs: float) -> int:
    return max(1, round(num_items * epochs / batch))
