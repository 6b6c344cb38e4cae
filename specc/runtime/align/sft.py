"""Supervised fine-tuning: next-token loss on response tokens only (Ouyang et al. 2022, section 3.5).

The loss is the mean over response tokens of the (global) batch, so a step's weight does not
depend on how much prompt text its conversations carry, nor on how the batch is split over ranks:
each rank divides its response tokens' summed loss by the whole batch's response-token count
(one all-reduce), times the world size because FSDP averages the ranks' gradients.
"""

from __future__ import annotations

import torch

from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.data import load_sft, pack, step_indices, total_steps
from specc.runtime.align.trainer import train_loop


def masked_nll(model: torch.nn.Module, rows: torch.Tensor, mask: torch.Tensor,
               total: torch.Tensor | None = None) -> torch.Tensor:
    """Summed negative log-likelihood of the masked targets over `total` response tokens (default:
    this batch's own; rows are (batch, seq_len + 1)). The model's head computes the log-probabilities
    (chunked unless `parallel.loss: full`)."""
    logprobs = model(rows[:, :-1], targets=rows[:, 1:])
    total = mask.sum() if total is None else total
    return -(logprobs * mask).sum() / total.clamp(min=1.0)


def run_sft(context: StageContext) -> None:
    stage, rt = context.stage, context.rt
    policy = context.language_model("init_checkpoint")
    examples = load_sft(context.data_path(stage.data), context.template, context.codec, stage.fields)
    rows, masks = pack(examples, context.seq_len, context.codec.pad_id, stage.packing)
    steps = total_steps(len(rows), stage.batch_size, stage.epochs)
    context.log(f"{stage.name}: {len(examples)} conversations in {len(rows)} rows of {context.seq_len + 1} tokens "
                f"(packing={stage.packing}), {int(masks.sum())} response tokens, {steps} steps of {stage.batch_size} "
                f"over {rt.world} rank(s), {rt.precision}")

    def step_fn(step: int, update) -> dict:
        index = rt.local_slice(step_indices(len(rows), stage.batch_size, step, context.seed))
        total = rt.global_sum(masks[torch.tensor(index)].sum().to(rt.device))
        summed = torch.zeros((), device=rt.device)
        for chunk in rt.micro_batches(index):
            batch, mask = rows[torch.tensor(chunk)].to(rt.device), masks[torch.tensor(chunk)].to(rt.device)
            with rt.autocast():
                loss = masked_nll(policy, batch, mask, total)
            (loss * rt.world).backward()
            summed += loss.detach().float()
        grad_norm = update()
        return {"loss": float(rt.global_sum(summed)), "response_tokens": int(total), "grad_norm": grad_norm}

    last = train_loop(policy, context.loop_settings(steps), step_fn, rt)
    context.save_language_model(policy, context.out_dir / "final")
    finish(context, inputs_record(context, ("init_checkpoint",)), {"steps": steps, "final_loss": last.get("loss")})
