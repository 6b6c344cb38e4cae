"""Reward model: the transformer trunk with a scalar head, trained with the pairwise loss
-log sigmoid(r(x, y_w) - r(x, y_l)) (Ouyang et al. 2022, eq. 1; Stiennon et al. 2020).

`ScalarModel` is also PPO's value model (one scalar per position; InstructGPT initialises
the value function from the reward model). Saved as `model.safetensors` with the trunk's
weights plus `head.weight`/`head.bias`, and `config.json` (the ModelSpec) — the trunk's
output head is dropped, so the file is not a language model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.data import PreferencePair, load_preferences, step_indices, total_steps
from specc.runtime.align.distributed import AlignRuntime
from specc.runtime.align.trainer import train_loop
from specc.runtime.infer.weights import WEIGHTS, load_model, model_spec_from_dir, write_safetensors
from specc.runtime.io import atomic_write_json
from specc.runtime.train.model import Transformer, build_model


class ScalarModel(nn.Module):
    """Transformer trunk (final norm, no LM head) + a linear head to one scalar per position."""

    def __init__(self, trunk: Transformer):
        super().__init__()
        trunk.output = None  # Transformer.forward then returns the normalised hidden states
        self.trunk = trunk
        self.spec = trunk.spec
        self.head = nn.Linear(trunk.spec.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, seq) -> (batch, seq) scalars."""
        return self.head(self.trunk(tokens)).squeeze(-1)

    def score(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The scalar at each row's last real token (rows are right-padded)."""
        values = self(tokens)
        return values.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)


def save_scalar_model(model: ScalarModel, directory: Path, rt: AlignRuntime | None = None) -> None:
    """The whole model (gathered from its shards to rank 0 under `rt`: collective) as safetensors."""
    if rt is not None:
        state = rt.full_state(model)
        if state is None:
            return
    else:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(dict(sorted(state.items())), directory / WEIGHTS, {"format": "pt", "kind": "scalar"})
    atomic_write_json(directory / "config.json", model.spec.model_dump(mode="json"))


def load_scalar_model(directory: Path, device_: torch.device | str = "cpu") -> ScalarModel:
    model = ScalarModel(build_model(model_spec_from_dir(directory), seed=0))
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    return model.to(device_).eval()


def scalar_from_language_model(directory: Path, device_: torch.device | str) -> ScalarModel:
    """A reward model initialised from a language model's trunk, with a zero head."""
    return ScalarModel(load_model(directory, device_)).to(device_)


def pad_rows(rows: list[list[int]], pad_id: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (batch, length) ids and the real lengths; rows are cut from the left to max_len."""
    rows = [row[-max_len:] for row in rows]
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(row) for row in rows])


def pair_scores(model: ScalarModel, pairs: list[PreferencePair], pad_id: int, max_len: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    tokens, lengths = pad_rows(rows, pad_id, max_len)
    dev = model.head.weight.device
    scores = model.score(tokens.to(dev), lengths.to(dev))
    return scores[:len(pairs)], scores[len(pairs):]


def place_scalar_model(model: ScalarModel, rt: AlignRuntime, trained: bool) -> ScalarModel:
    """A scalar model on the ranks: FSDP2 over its trunk's blocks and the whole (trunk + head)."""
    return rt.place(model, trained=trained, trunk=model.trunk)


def run_reward_model(context: StageContext) -> None:
    stage, rt = context.stage, context.rt
    pairs = load_preferences(context.data_path(stage.data), context.template, context.codec, stage.fields)
    model = place_scalar_model(scalar_from_language_model(context.path("init_checkpoint"), "cpu"), rt, trained=True)
    steps = total_steps(len(pairs), stage.batch_size, stage.epochs)
    context.log(f"{stage.name}: reward model on {len(pairs)} pairs, {steps} steps of {stage.batch_size} "
                f"over {rt.world} rank(s), {rt.precision}")

    def step_fn(step: int, update) -> dict:
        index = rt.local_slice(step_indices(len(pairs), stage.batch_size, step, context.seed))
        margins = []
        for chunk in rt.micro_batches(index, sequences_per_item=2):
            with rt.autocast():
                chosen, rejected = pair_scores(model, [pairs[i] for i in chunk], context.codec.pad_id, context.seq_len)
            margin = (chosen - rejected).float()
            (-F.logsigmoid(margin).sum() / len(index)).backward()  # the mean over the rank's whole share
            margins.append(margin.detach())
        margin = torch.cat(margins)
        loss = -F.logsigmoid(margin).mean()
        return {"loss": rt.mean(float(loss.detach())), "accuracy": rt.mean(float((margin > 0).float().mean())),
                "margin": rt.mean(float(margin.mean())), "grad_norm": update()}

    last = train_loop(model, context.loop_settings(steps), step_fn, rt)
    save_scalar_model(model, context.out_dir / "final", rt)
    finish(context, inputs_record(context, ("init_checkpoint",)),
           {"steps": steps, "final_loss": last.get("loss"), "accuracy": last.get("accuracy")})
