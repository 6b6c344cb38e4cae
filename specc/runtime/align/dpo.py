"""Direct preference optimisation (Rafailov et al. 2023).

Loss (eq. 7): -log sigmoid(beta [log pi(y_w|x)/pi_ref(y_w|x) - log pi(y_l|x)/pi_ref(y_l|x)]).
The implicit rewards beta log pi/pi_ref of chosen and rejected responses are logged with
their margin and the fraction of pairs where the chosen one wins (reward accuracy).
The reference's log-probs are fixed, so by default they are computed once before training
and stored (`reference_logps.pt`), and the reference model is never held during training.

Distributed: every model is FSDP2-sharded over the ranks (`specc.runtime.align.distributed`);
each rank scores its slice of a step's pairs, and the loss (a mean over equal slices) and the
logged statistics are averaged over ranks. The precomputed reference is scored by all ranks
together (chunk k on rank k mod world), gathered, and written by rank 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.data import PreferencePair, load_preferences, step_indices, total_steps
from specc.runtime.align.trainer import train_loop
from specc.runtime.infer.scoring import continuation_logprobs, pad_pairs


def pair_logps(model: torch.nn.Module, pairs: list[PreferencePair], pad_id: int, max_len: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (chosen, rejected), differentiable in the model."""
    batch = pad_pairs([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs], pad_id, max_len)
    logps = continuation_logprobs(model, batch)
    return logps[:len(pairs)], logps[len(pairs):]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """Rafailov et al. 2023, eq. 7, with the implicit-reward statistics."""
    chosen_reward = beta * (policy_chosen - reference_chosen)
    rejected_reward = beta * (policy_rejected - reference_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    margin, chosen_reward, rejected_reward = margin.detach(), chosen_reward.detach(), rejected_reward.detach()
    stats = {"loss": float(loss.detach()), "reward_margin": float(margin.mean()),
             "reward_accuracy": float((margin > 0).float().mean()), "chosen_reward": float(chosen_reward.mean()),
             "rejected_reward": float(rejected_reward.mean())}
    return loss, stats


REFERENCE_CHUNK = 16
"""Pairs per reference forward when precomputing."""


@torch.no_grad()
def reference_logps(context: StageContext, pairs: list[PreferencePair]) -> torch.Tensor:
    """(num_pairs, 2) reference log-probs, computed once and stored (reused on resume)."""
    rt = context.rt
    path = context.out_dir / "reference_logps.pt"
    if path.exists():
        stored = torch.load(path, weights_only=True)
        if stored.shape == (len(pairs), 2):
            return stored
    reference = context.language_model("reference_checkpoint", trained=False)
    chunks = [pairs[start:start + REFERENCE_CHUNK] for start in range(0, len(pairs), REFERENCE_CHUNK)]
    rounds = -(-len(chunks) // rt.world)  # every rank runs as many forwards (FSDP all-gathers per forward)
    mine = {}
    for k in range(rounds):
        index = k * rt.world + rt.rank
        batch = chunks[index] if index < len(chunks) else chunks[0]
        with rt.autocast():
            chosen, rejected = pair_logps(reference, batch, context.codec.pad_id, context.seq_len)
        if index < len(chunks):
            mine[index] = torch.stack([chosen, rejected], dim=1).float().cpu()
    scored = {index: rows for share in rt.gather(mine) for index, rows in share.items()}
    values = torch.cat([scored[index] for index in range(len(chunks))])
    del reference
    if rt.main:
        context.out_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(values, temporary)
        temporary.replace(path)
    rt.barrier()
    return values


def run_dpo(context: StageContext) -> None:
    stage, rt = context.stage, context.rt
    pairs = load_preferences(context.data_path(stage.data), context.template, context.codec, stage.fields)
    held_reference = None
    if stage.precompute_reference:
        stored = reference_logps(context, pairs)
    else:
        held_reference = context.language_model("reference_checkpoint", trained=False)
    policy = context.language_model("init_checkpoint")
    steps = total_steps(len(pairs), stage.batch_size, stage.epochs)
    context.log(f"{stage.name}: {len(pairs)} preference pairs, beta {stage.beta}, {steps} steps of {stage.batch_size} "
                f"over {rt.world} rank(s), {rt.precision}, "
                f"reference {'precomputed' if stage.precompute_reference else 'held in memory'}")

    def step_fn(step: int, update) -> dict:
        index = rt.local_slice(step_indices(len(pairs), stage.batch_size, step, context.seed))
        scored = []
        for chunk in rt.micro_batches(index, sequences_per_item=2):
            batch = [pairs[i] for i in chunk]
            with rt.autocast():
                chosen, rejected = pair_logps(policy, batch, context.codec.pad_id, context.seq_len)
                if held_reference is not None:
                    with torch.no_grad():
                        ref_chosen, ref_rejected = pair_logps(held_reference, batch, context.codec.pad_id,
                                                              context.seq_len)
            if held_reference is None:
                ref = stored[chunk].to(chosen.device)
                ref_chosen, ref_rejected = ref[:, 0], ref[:, 1]
            values = (chosen.float(), rejected.float(), ref_chosen.float(), ref_rejected.float())
            loss, _ = dpo_loss(*values, stage.beta)
            (loss * len(chunk) / len(index)).backward()  # the mean over the rank's whole share
            scored.append([value.detach() for value in values])
        _, stats = dpo_loss(*(torch.cat(parts) for parts in zip(*scored)), stage.beta)
        return {**{key: rt.mean(value) for key, value in stats.items()}, "grad_norm": update()}

    last = train_loop(policy, context.loop_settings(steps), step_fn, rt)
    context.save_language_model(policy, context.out_dir / "final")
    finish(context, inputs_record(context, ("init_checkpoint", "reference_checkpoint")),
           {"steps": steps, "final_loss": last.get("loss"), "reward_accuracy": last.get("reward_accuracy")})
