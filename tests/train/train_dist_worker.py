"""torchrun worker for the layout tests: trains every case of a JSON file in one launch
(one process-group start-up for all layouts; each case builds its own mesh), then, if given,
runs a whole pretrain stage config (final-weight export across ranks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from specc.runtime.train import stage
from specc.runtime.train.loop import TrainSettings, train
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec


def settings_for(case: dict, root: Path, shard_dir: Path) -> TrainSettings:
    return TrainSettings(model=ModelSpec.model_validate(case["model"]),
                         parallel=ParallelSpec.model_validate(case["parallel"]),
                         schedule=ScheduleSpec.model_validate(case["schedule"]),
                         out_dir=root / case["name"], shard_dir=shard_dir)


def main() -> None:
    cases_file, root, shard_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    for case in json.loads(cases_file.read_text()):
        train(settings_for(case, root, shard_dir))
    if len(sys.argv) > 4:
        stage.run(json.loads(Path(sys.argv[4]).read_text()))  # ends the process group itself
    else:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
