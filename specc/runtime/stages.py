"""Stage name -> the module that runs it, in pipeline order.

Modules are imported only when their stage runs, so importing this registry is cheap
and never pulls in torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGE_MODULES: dict[str, str] = {
    "data": "specc.runtime.data.stage",
    "tokenize": "specc.runtime.tokenizer.stage",
    "pretrain": "specc.runtime.train.stage",
    "pretrain_tpu": "specc.runtime.tpu.stage",
    "eval": "specc.runtime.evaluate.stage",
    "deploy": "specc.runtime.deploy.stage",
}
"""Filled in pipeline order as stages land (alignment stages sit between pretrain and eval)."""

ALIGNMENT_MODULE = "specc.runtime.align.stage"
"""Alignment stages are named by the spec (`sft`, `dpo-round2`, ...): a config whose
`params.stage` is an alignment-stage object with that name and a `type` runs this module."""


def module_for_config(config: dict) -> ModuleType:
    """The module that runs a stage config: by name, or the alignment module for an alignment stage."""
    name = config.get("stage", "")
    stage = (config.get("params") or {}).get("stage")
    if name not in STAGE_MODULES and isinstance(stage, dict) and stage.get("name") == name and "type" in stage:
        return importlib.import_module(ALIGNMENT_MODULE)
    return stage_module(name)


def stage_module(name: str) -> ModuleType:
    """Import the module that runs stage `name`."""
    if name not in STAGE_MODULES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_MODULES)}")
    return importlib.import_module(STAGE_MODULES[name])
