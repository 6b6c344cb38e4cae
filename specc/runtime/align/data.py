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

from specc.runtime.align.chat import ChatTemplate
from specc.runtime.align.records import AlignmentDataError, read_rows
from specc.runtime.infer.weights import TextCodec


@dataclass(frozen=True)
class SFTExample:
    tokens: list[int]
    loss_mask: list[int]
    """1 where the token is part of a response (the loss is computed only there)."""


def encode_conversation(row: dict, template: ChatTemplate, codec: TextCodec) -> SFTExample:
    """A `records.read_rows` SFT row: a conversation (loss on assistant turns) or plain `text`
    (TRL's language-modeling format: loss on every token, the document closed by EOS)."""
    if "text" in row:
        tokens = codec.encode(row["text"]) + [codec.eos_id]
        return SFTExample(tokens, [1] * len(tokens))
    if "messages" in row:
        messages = row["messages"]
    else:
        messages = _as_list(row["prompt"], "user") + _as_list(row.get("completion", row.get("response")), "assistant")
    tokens, mask = [], []
    for text, is_response in template.spans(messages):
        ids = codec.encode(text)
        tokens += ids
        mask += [int(is_response)] * len(ids)
    return SFTExample(tokens, mask)


def _as_list(value, role: str) -> list[dict]:
    """A string as one message of `role`; a message list as it is."""
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def load_sft(path: Path, template: ChatTemplate, codec: TextCodec, fields: dict | None = None) -> list[SFTExample]:
    """SFT examples of a data path (jsonl, parquet, Arrow, `save_to_disk`; `records` lists the layouts)."""
    examples = [encode_conversation(row, template, codec) for row in read_rows(path, "sft", fields)]
    examples = [e for e in examples if any(e.loss_mask)]
    if not examples:
        raise AlignmentDataError(f"{path}: no example has an assistant response to train on")
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


def load_preferences(path: Path, template: ChatTemplate, codec: TextCodec,
                     fields: dict | None = None) -> list[PreferencePair]:
    """Preference rows (explicit or implicit prompt, strings or message lists): the prompt rendered
    with the generation prompt, each completion as the template renders it after that prompt."""
    pairs = []
    for row in read_rows(path, "preference", fields):
        prompt = template.prompt(row["prompt"])
        chosen = codec.encode(_completion_text(row["prompt"], prompt, row["chosen"], template))
        rejected = codec.encode(_completion_text(row["prompt"], prompt, row["rejected"], template))
        pairs.append(PreferencePair(codec.encode(prompt), chosen, rejected))
    return pairs


def _completion_text(messages: list[dict], prompt: str, completion, template: ChatTemplate) -> str:
    """The completion as the policy generates it after the prompt: up to and including the
    end-of-turn marker (where PPO rollouts and generation stop). A string is its text and the
    marker; a message list is what the template renders past the prompt, cut after its last marker,
    so the two formats give the same tokens."""
    if isinstance(completion, str):
        return completion + template.end_of_turn
    full = template.render(messages + completion, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ValueError("chat template is not prefix-stable: the conversation with its completion does not "
                         "start with the rendered prompt")
    text = full[len(prompt):]
    end = text.rfind(template.end_of_turn) if template.end_of_turn else -1
    return text[:end + len(template.end_of_turn)] if end >= 0 else text


def load_prompts(path: Path, template: ChatTemplate, codec: TextCodec, fields: dict | None = None) -> list[list[int]]:
    return [codec.encode(template.prompt(row["prompt"])) for row in read_rows(path, "prompt", fields)]


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
