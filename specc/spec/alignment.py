"""Spec section `alignment`: ordered post-training stages (SFT, reward model, PPO, DPO,
constitutional critique/revise data)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from specc.spec.base import SpecModel
from specc.spec.types import Identifier, Number, PositiveCount, PositiveLength

DataField = Literal["messages", "prompt", "completion", "response", "text", "chosen", "rejected"]
"""Field names of the TRL dataset formats (https://huggingface.co/docs/trl/dataset_formats)."""


class _Stage(SpecModel):
    name: Identifier
    """Stage name; later stages refer to it (`init_from`, `reference`, `reward_model`)."""
    init_from: str = "pretrain"
    """Weights to start from: `pretrain` (the pretrained model: the pretrain stage's, or
    `model.init_from` in a fine-tune without a corpus), the name of an earlier stage, or a checkpoint path."""
    lr: Annotated[Number, Field(gt=0, le=1)] = 1e-5
    """Peak learning rate (AdamW; typical: SFT 2e-5, DPO 5e-7 to 1e-6, PPO 1e-6 to 1e-5)."""
    epochs: Annotated[Number, Field(gt=0)] = 1.0
    """Passes over the stage's data."""
    batch_size: PositiveCount = 32
    """Sequences (or pairs) per optimizer step."""
    seq_len: PositiveLength | None = None
    """Sequence length in tokens, at most `model.max_seq_len`; default the pretraining
    `schedule.seq_len` (capped at `model.max_seq_len`). See `stage_seq_len`."""
    fields: dict[DataField, Annotated[str, Field(min_length=1)]] = {}
    """The data's own column names for the TRL field names it uses, e.g. `{messages: conversations}`
    or `{prompt: question, chosen: good, rejected: bad}`; unnamed fields keep their TRL names."""


class SFTStage(_Stage):
    """Supervised fine-tuning on instruction/chat data; loss on response tokens only."""

    type: Literal["sft"]
    data: str = Field(min_length=1)
    """SFT data (a jsonl, parquet or `.arrow` file, a glob of them, a directory of them, or a `datasets`
    `save_to_disk` directory) with, first match wins: `messages` (a list of `{role, content}`),
    `prompt` + `completion` (strings or message lists), `prompt` + `response`, or `text`
    (loss on every token). Rename columns with `fields`."""
    chat_template: str = "chatml"
    """`chatml`, `llama3`, a path to a Jinja2 chat template, or to a Hugging Face
    `tokenizer_config.json` (its `chat_template`). Under `model.init_from`, default: the
    directory's own template when it has one."""
    packing: bool = True
    """Pack several conversations per sequence."""


class RewardModelStage(_Stage):
    """A reward model (scalar head) trained with the pairwise loss on preference pairs."""

    type: Literal["reward_model"]
    data: str = Field(min_length=1)
    """Preference data (file, glob, directory or `save_to_disk` directory, as SFT `data`) with
    `prompt` + `chosen` + `rejected`, or `chosen` + `rejected` sharing an implicit prompt; each a
    string or a list of `{role, content}` messages. Rename columns with `fields`."""


class PPOStage(_Stage):
    """RLHF with PPO: policy, frozen reference (KL penalty), value head and reward model."""

    type: Literal["ppo"]
    prompts: str = Field(min_length=1)
    """Prompt-only data (file, glob, directory or `save_to_disk` directory, as SFT `data`) with
    `prompt`: a string or a list of `{role, content}` messages. Rename it with `fields`."""
    reward_model: Identifier
    """Name of the `reward_model` stage that scores rollouts."""
    kl_coef: Annotated[Number, Field(ge=0)] = 0.05
    clip_range: Annotated[Number, Field(gt=0, lt=1)] = 0.2
    gae_lambda: Annotated[Number, Field(ge=0, le=1)] = 0.95
    gamma: Annotated[Number, Field(ge=0, le=1)] = 1.0
    rollout_batch: PositiveCount = 64
    max_new_tokens: PositiveLength = 128
    """Tokens sampled per rollout; prompts are cut from the left to `seq_len - max_new_tokens`."""
    ppo_epochs: PositiveCount = 4
    colocate: bool = True
    """Hold all four models on the same devices (else split policy/value from reference/reward)."""


class DPOStage(_Stage):
    """Direct preference optimisation (Rafailov et al. 2023)."""

    type: Literal["dpo"]
    data: str = Field(min_length=1)
    """Preference data (file, glob, directory or `save_to_disk` directory, as SFT `data`) with
    `prompt` + `chosen` + `rejected`, or `chosen` + `rejected` sharing an implicit prompt; each a
    string or a list of `{role, content}` messages. Rename columns with `fields`."""
    beta: Annotated[Number, Field(gt=0)] = 0.1
    """Strength of the implicit KL constraint."""
    reference: str = "init"
    """Frozen reference: `init` (the starting weights) or a stage name."""
    precompute_reference: bool = True
    """Compute reference log-probs once before training instead of holding the reference model."""


class ConstitutionalStage(SpecModel):
    """Constitutional-style data (Bai et al. 2022): generate, critique against principles, revise."""

    type: Literal["constitutional"]
    name: Identifier
    init_from: str = "pretrain"
    """Model that writes responses, critiques and revisions."""
    prompts: str = Field(min_length=1)
    """jsonl of `{"prompt"}`."""
    principles: list[str] = Field(min_length=1)
    """The principles critiques are written against."""
    rounds: Annotated[int, Field(ge=1, le=8)] = 1
    """Critique/revise rounds per response."""
    output: Literal["sft", "dpo"] = "dpo"
    """Turn revisions into SFT data, or (original, revision) pairs for DPO."""
    max_new_tokens: PositiveLength = 128
    """Tokens generated per response, critique and revision; prompts are cut from the left to
    `model.max_seq_len - max_new_tokens`."""
    seed: int = 0


AlignmentStage = Annotated[
    SFTStage | RewardModelStage | PPOStage | DPOStage | ConstitutionalStage,
    Field(discriminator="type"),
]


def stage_seq_len(stage, schedule_seq_len: int, max_seq_len: int) -> int:
    """The sequence length an alignment stage trains and generates within, in tokens.

    One function for validate (R151 rejects a length past the model's context), the planner
    (alignment memory) and the runtime (the stage's params), so the length the plan charges
    is the one the job runs:
    - a stage's own `seq_len` as written (validate keeps it <= model.max_seq_len);
    - otherwise the pretraining `schedule.seq_len`, capped at `model.max_seq_len` (an ALiBi
      model may pretrain longer than its declared context; generation stops at it);
    - a constitutional stage has no `seq_len`: it generates within the model's whole context.
    """
    if stage.type == "constitutional":
        return max_seq_len
    if stage.seq_len is not None:
        return stage.seq_len
    return min(schedule_seq_len, max_seq_len)
