"""A `cluster.catalog` accelerator reaches the pretrain runtime with its stage config
(`accelerator_entry`), so the runtime's capability checks know it as validate did."""

from __future__ import annotations

import pytest
import torch

from train_helpers import tiny_model, tiny_schedule

from specc.catalog import builtin_catalog, entry_of, load_catalog, use_user_catalog
from specc.runtime.train.precision import check_precision_runs
from specc.runtime.train.stage import settings_from_config


def test_the_stage_config_registers_the_users_accelerator(tmp_path):
    entry = entry_of(builtin_catalog()["a100-80gb"]) | {"id": "my-a100", "name": "my A100"}
    params = {"model": tiny_model(), "parallel": {"dp": 1, "precision": "fp32"}, "schedule": tiny_schedule(),
              "devices": 1, "accelerator": "my-a100", "predicted": None}
    try:
        with pytest.raises(ValueError, match="unknown accelerator 'my-a100'"):
            check_precision_runs("fp32", "my-a100", torch.device("cpu"))
        settings = settings_from_config({"run_dir": str(tmp_path), "params": params | {"accelerator_entry": entry}})
        assert load_catalog()["my-a100"].memory_gb == 80
        check_precision_runs("fp32", settings.accelerator, torch.device("cpu"))
        with pytest.raises(ValueError, match="has no fp8|does not run on my A100"):
            check_precision_runs("fp8", settings.accelerator, torch.device("cpu"))
    finally:
        use_user_catalog({})
