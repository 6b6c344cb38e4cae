"""Every alignment stage: `run(config)` dispatches on the stage's `type`.

config.json: {"stage": <the spec's stage name>, "run_dir": ..., "params": see
`specc.runtime.align.common`}. Outputs under `<run_dir>/<name>/`: `checkpoints/`,
`metrics.jsonl`, `final/` (model.safetensors + config.json + provenance.json with the
sha256 of the weights it started from), and `_SUCCESS.json` last. Rerunning a killed stage
resumes from its newest checkpoint; rerunning a finished one does nothing.

Under torchrun (one process per device, the alignment kind spans the cluster) SFT, the reward
model, DPO and PPO run on every rank (`specc.runtime.align.distributed`); the constitutional
stage only generates, on rank 0, while the other ranks return at once.
"""

from __future__ import annotations

import os

from specc.runtime.align.common import stage_context
from specc.runtime.stages import skips_when_complete


@skips_when_complete
def run(config: dict) -> None:
    kind = config["params"]["stage"]["type"]
    if kind == "constitutional" and int(os.environ.get("RANK", "0")) != 0:
        return  # generation only, on rank 0 (`run_constitutional`); the other ranks have nothing to do
    context = stage_context(config, distributed=kind != "constitutional")
    if kind == "sft":
        from specc.runtime.align.sft import run_sft as runner
    elif kind == "dpo":
        from specc.runtime.align.dpo import run_dpo as runner
    elif kind == "reward_model":
        from specc.runtime.align.reward import run_reward_model as runner
    elif kind == "ppo":
        from specc.runtime.align.ppo import run_ppo as runner
    else:
        from specc.runtime.align.constitutional import run_constitutional as runner
    runner(context)
