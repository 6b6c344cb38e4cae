"""Train a speculative-decoding draft model by distillation from the target.

Token-level knowledge distillation (Hinton et al. 2015; the draft recipe of DistillSpec,
Zhou et al. 2024): the draft minimises KL(p_target || p_draft) on held-in text, which
directly raises the acceptance rate sum_x min(p, q) (Leviathan et al. 2023, section 3.3).
Checkpointed with the runtime's DCP checkpoints, so a killed deploy stage resumes here too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from specc.runtime.align.trainer import LoopSettings, train_loop
from specc.runtime.shards import open_split
from specc.runtime.train.data import SequenceStream
from specc.runtime.train.model import Transformer, build_model
from specc.spec.model import ModelSpec


def distill_draft(target: Transformer, draft_spec: ModelSpec, shard_dir: Path, out_dir: Path, steps: int,
                  batch_size: int, seq_len: int, lr: float, seed: int) -> Transformer:
    if draft_spec.vocab_size != target.spec.vocab_size:
        raise ValueError(f"draft vocab_size ({draft_spec.vocab_size}) must equal the target's "
                         f"({target.spec.vocab_size}): both read the same tokenizer")
    device = next(target.parameters()).device
    draft = build_model(draft_spec, seed=seed).to(device)
    stream = SequenceStream(open_split(shard_dir, "train"), min(seq_len, draft_spec.max_seq_len), seed)
    target.eval().requires_grad_(False)

    def step_fn(step: int, update) -> dict:
        batch = stream.sequences(step * batch_size, batch_size)[:, :-1].to(device)
        with torch.no_grad():
            teacher = target(batch).float().log_softmax(-1)
        student = draft(batch).float().log_softmax(-1)
        loss = F.kl_div(student.flatten(0, 1), teacher.flatten(0, 1), log_target=True, reduction="batchmean")
        loss.backward()
        return {"distill_kl": float(loss.detach()), "grad_norm": update()}

    settings = LoopSettings(out_dir=out_dir, total_steps=steps, lr=lr, checkpoint_interval=max(1, steps // 4),
                            warmup_steps=min(10, steps // 10), stage_name="deploy-draft")
    train_loop(draft, settings, step_fn)
    return draft.eval()
