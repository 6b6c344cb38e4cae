"""Supervised fine-tuning: next-token loss on response tokens only (Ouyang et al. 2022, section 3.5).

The loss is the mean over response tokens of the batch, so a step's weight does not depend
on how much prompt text its conversations carry.
"""

from __future__ import annotations

import torch

from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.data import load_sft, pack, step_indices, total_steps
from specc.runtime.align.trainer import device, train_loop
from specc.runtime.infer.weights import save_model


def masked_nll(model: torch.nn.Module, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the masked targets; rows are (batch, seq_len + 1). The model's
    head computes the log-probabilities (chunked unless `parallel.loss: full`)."""
    logprobs = model(rows[:, :-1], targets=rows[:, 1:])
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1.0)


def run_sft(context: StageContext) -> None:
    stage = context.stage
    policy = context.language_model("init_checkpoint", device())
    examples = load_sft(context.data_path(stage.data), context.template, context.codec, stage.fields)
    rows, masks = pack(examples, context.seq_len, context.codec.pad_id, stage.packing)
    steps = total_steps(len(rows), stage.batch_size, stage.epochs)
    print(f"{stage.name}: {len(examples)} conversations in {len(rows)} rows of {context.seq_len + 1} tokens "
          f"(packing={stage.packing}), {int(masks.sum())} response tokens, {steps} steps of {stage.batch_size}")

    def step_fn(step: int, update) -> dict:
        index = torch.tensor(step_indices(len(rows), stage.batch_size, step, context.seed))
        batch, mask = rows[index].to(policy.output.weight.device), masks[index].to(policy.output.weight.device)
        loss = masked_nll(policy, batch, mask)
        loss.backward()
        grad_norm = update()
        return {"loss": float(loss.detach()), "response_tokens": int(mask.sum()), "grad_norm": grad_norm}

    last = train_loop(policy, context.loop_settings(steps), step_fn)
    save_model(policy, context.out_dir / "final")
    finish(context, inputs_record(context, ("init_checkpoint",)), {"steps": steps, "final_loss": last.get("loss")})
