"""torchrun worker for the precision layout tests: trains every case of a JSON file (fp8 under
FSDP, TP/SP and pipelining; fp16 and bf16 under FSDP, TP and pipelining) and records, per case,
what rank 0's converted weights are (torchao's fp8 all-gather wraps them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.tensor import DTensor

from specc.runtime.train import precision as prec
from specc.runtime.train.loop import TrainSettings, train
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec


def weight_class(parts) -> str:
    """The class of rank 0's first attention query weight (the local shard under FSDP/TP)."""
    weight = parts[0].layers[next(iter(parts[0].layers))].attention.wq.weight
    return type(weight.to_local() if isinstance(weight, DTensor) else weight).__name__


def main() -> None:
    cases_file, root, shard_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    # torch runs `_scaled_mm` on CPU (no fp8 units, no speed-up): only the device check refuses it
    prec.check_precision_runs = lambda precision, accelerator, device: None
    facts = {}
    for case in json.loads(cases_file.read_text()):
        summary = train(TrainSettings(model=ModelSpec.model_validate(case["model"]),
                                      parallel=ParallelSpec.model_validate(case["parallel"]),
                                      schedule=ScheduleSpec.model_validate(case["schedule"]),
                                      out_dir=root / case["name"], shard_dir=shard_dir))
        facts[case["name"]] = {"weight_class": weight_class(summary["parts"])}
    if dist.get_rank() == 0:
        (root / "facts.json").write_text(json.dumps(facts))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
