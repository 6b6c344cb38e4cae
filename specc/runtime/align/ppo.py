"""RLHF with PPO (Schulman et al. 2017; the InstructGPT recipe, Ouyang et al. 2022).

Four models: the policy (trained), a frozen reference (the starting policy), a value model
(trained; initialised from the reward model as in InstructGPT) and the frozen reward model.
One step:
1. roll out: sample a response to each of `rollout_batch` prompts with the policy, using the
   KV-cache decoder (temperature 1), stopping at the end-of-turn marker or EOS;
2. score: per-token log-probs of policy and reference, values, and the reward model's scalar
   for the whole response. Per-token reward = -kl_coef (log pi - log pi_ref), plus the score
   on the last token (Ziegler et al. 2019, eq. 2);
3. advantages by GAE (Schulman et al. 2016, eq. 16) with gamma and lambda, returns = A + V;
   advantages whitened over the batch;
4. `ppo_epochs` passes of the clipped surrogate (Schulman et al. 2017, eq. 7) plus a
   clipped value loss, each pass one optimizer update.
Reward (mean score) and KL (mean over rollouts of the summed log-ratio) are logged per step.

Distributed: the four models are FSDP2-sharded over all ranks, colocated (the only placement
the runtime executes; validate R265 refuses `colocate: false`). Each rank rolls out its slice of
the step's prompts with the policy's weights gathered once for the whole rollout (`Unsharded`:
ranks sample different lengths, so per-forward all-gathers would not line up); advantages are
whitened and losses normalised over the global batch's response tokens.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.data import load_prompts, step_indices
from specc.runtime.align.distributed import AlignRuntime, Unsharded
from specc.runtime.align.reward import (ScalarModel, load_scalar_model, pad_rows, place_scalar_model,
                                        save_scalar_model)
from specc.runtime.align.trainer import train_loop
from specc.runtime.infer.decode import SamplingSettings, generate
from specc.runtime.train.model import Transformer

VALUE_COEF = 0.5
VALUE_CLIP = 0.2


@dataclass
class Rollouts:
    tokens: torch.Tensor
    """(batch, length) prompt + response, right-padded."""
    lengths: torch.Tensor
    mask: torch.Tensor
    """(batch, length - 1) 1 on positions whose target is a response token."""
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked (response) positions of each row.

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lambda A_{t+1}; V after the
    last response token is 0 (the episode ends). Returns (advantages, returns = A + V).
    """
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        live = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * live
        next_value = torch.where(live > 0, values[:, t], next_value)
        next_advantage = torch.where(live > 0, advantage, next_advantage)
    return advantages, advantages + values * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, global_sum=lambda t: t.detach()) -> torch.Tensor:
    """Zero mean, unit variance over the masked positions of the whole batch (`global_sum` adds
    the ranks' shares)."""
    count = global_sum(mask.sum())
    mean = global_sum((values * mask).sum()) / count
    variance = global_sum(((values - mean) ** 2 * mask).sum()) / count
    return (values - mean) * torch.rsqrt(variance + 1e-8) * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float, total: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Schulman et al. 2017, eq. 7 (negated for minimisation), over `total` response tokens
    (default: this batch's); also this batch's clipped fraction."""
    total = mask.sum() if total is None else total
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = (torch.maximum(unclipped, clipped) * mask).sum() / total
    fraction = (((ratio - 1.0).abs() > clip).float() * mask).sum() / mask.sum()
    return loss, float(fraction)


def response_stop(context: StageContext):
    end = context.template.end_of_turn

    def stop(tokens: list[int]) -> bool:
        return bool(end) and end in context.codec.decode(tokens[-8:])
    return stop


def roll_out(policy: Transformer, prompts: list[list[int]], context: StageContext,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampled responses, as (tokens, lengths, response mask aligned to targets)."""
    stage = context.stage
    rows, prompt_lengths = [], []
    for prompt in prompts:
        room = context.seq_len - stage.max_new_tokens
        prompt = prompt[-room:] if room > 0 else prompt[-1:]
        response = generate(policy, prompt, stage.max_new_tokens, SamplingSettings(temperature=1.0),
                            stop_ids=(context.codec.eos_id,), generator=generator,
                            stop_when=response_stop(context)).tokens
        rows.append(prompt + response)
        prompt_lengths.append(len(prompt))
    tokens, lengths = pad_rows(rows, context.codec.pad_id, context.seq_len + 1)
    mask = torch.zeros(tokens.shape[0], tokens.shape[1] - 1)
    for i, (start, end) in enumerate(zip(prompt_lengths, lengths.tolist())):
        mask[i, start - 1:end - 1] = 1.0
    return tokens, lengths, mask


def policy_logprobs(policy: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """log p of each next token from the model's head (chunked unless `parallel.loss: full`)."""
    return policy(tokens[:, :-1], targets=tokens[:, 1:])


@torch.no_grad()
def score_rollouts(tokens, lengths, mask, policy, reference, value, reward, autocast=nullcontext) -> Rollouts:
    with autocast():
        return Rollouts(tokens, lengths, mask, policy_logprobs(policy, tokens).float(),
                        policy_logprobs(reference, tokens).float(), value(tokens)[:, :-1].float(),
                        reward.score(tokens, lengths).float())


def ppo_step(rollouts: Rollouts, policy: Transformer, value: ScalarModel, stage, update,
             rt: AlignRuntime | None = None) -> dict:
    """GAE, whitening and `ppo_epochs` clipped updates on this rank's rollouts; losses are over the
    global batch's response tokens (times the world size: FSDP averages the ranks' gradients)."""
    world = rt.world if rt is not None else 1
    global_sum = rt.global_sum if rt is not None else (lambda t: t.detach())
    mean = rt.mean if rt is not None else float
    kl_per_token = (rollouts.old_logprobs - rollouts.ref_logprobs) * rollouts.mask
    rewards = -stage.kl_coef * kl_per_token
    last = (rollouts.lengths - 2).clamp(min=0)
    rewards[torch.arange(len(last)), last] += rollouts.scores
    advantages, returns = gae(rewards, rollouts.values, rollouts.mask, stage.gamma, stage.gae_lambda)
    advantages = whiten(advantages, rollouts.mask, global_sum)
    total = global_sum(rollouts.mask.sum())
    stats: dict = {}
    autocast = rt.autocast if rt is not None else nullcontext
    for _ in range(stage.ppo_epochs):
        with autocast():
            logprobs = policy_logprobs(policy, rollouts.tokens)
            values = value(rollouts.tokens)[:, :-1].float()
        policy_loss, clip_fraction = clipped_policy_loss(logprobs.float(), rollouts.old_logprobs, advantages,
                                                         rollouts.mask, stage.clip_range, total)
        clipped_values = rollouts.values + (values - rollouts.values).clamp(-VALUE_CLIP, VALUE_CLIP)
        value_loss = 0.5 * (torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
                            * rollouts.mask).sum() / total
        ((policy_loss + VALUE_COEF * value_loss) * world).backward()
        stats = {"policy_loss": float(global_sum(policy_loss)), "value_loss": float(global_sum(value_loss)),
                 "clip_fraction": mean(clip_fraction), "grad_norm": update()}
    return {"reward": mean(float(rollouts.scores.mean())), "kl": mean(float(kl_per_token.sum(dim=1).mean())),
            "response_tokens": mean(float(rollouts.mask.sum(dim=1).mean())), **stats}


def run_ppo(context: StageContext) -> None:
    stage, rt = context.stage, context.rt
    dev = rt.device
    if not stage.colocate:
        raise ValueError(f"alignment stage {stage.name!r}: colocate: false (policy and value apart from reference "
                         "and reward) is not executed by specc's runtime (`specc validate` reports this as R265)")
    policy = context.language_model("init_checkpoint")
    reference = context.language_model("init_checkpoint", trained=False)
    reward = place_scalar_model(load_scalar_model(context.path("reward_checkpoint"), "cpu"), rt, trained=False)
    value = place_scalar_model(load_scalar_model(context.path("reward_checkpoint"), "cpu"), rt, trained=True)
    trainable = nn.ModuleDict({"policy": policy, "value": value})
    prompts = load_prompts(context.data_path(stage.prompts), context.template, context.codec, stage.fields)
    steps = max(1, round(len(prompts) * stage.epochs / stage.rollout_batch))
    context.log(f"{stage.name}: PPO on {len(prompts)} prompts, {steps} steps of {stage.rollout_batch} rollouts "
                f"over {rt.world} rank(s), {stage.ppo_epochs} epochs each, kl_coef {stage.kl_coef}, {rt.precision}")

    def step_fn(step: int, update) -> dict:
        # one sampling stream per rank and step (CPU generator: see decode.sample)
        generator = torch.Generator().manual_seed((context.seed * 1_000_003 + step) * 4099 + rt.rank)
        indices = rt.local_slice(step_indices(len(prompts), stage.rollout_batch, step, context.seed), "rollout batch")
        batch = [prompts[i] for i in indices]
        policy.eval()
        with Unsharded(policy), rt.autocast():
            tokens, lengths, mask = roll_out(policy, batch, context, generator)
        tokens, lengths, mask = tokens.to(dev), lengths.to(dev), mask.to(dev)
        rollouts = score_rollouts(tokens, lengths, mask, policy, reference, value, reward, rt.autocast)
        policy.train()
        return ppo_step(rollouts, policy, value, stage, update, rt)

    last = train_loop(trainable, context.loop_settings(steps), step_fn, rt)
    context.save_language_model(policy, context.out_dir / "final")
    save_scalar_model(value, context.out_dir / "value", rt)
    finish(context, inputs_record(context, ("init_checkpoint", "reward_checkpoint")),
           {"steps": steps, "reward": last.get("reward"), "kl": last.get("kl")})
