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
}
"""Filled in pipeline order as stages land (alignment, eval and deploy follow pretrain)."""


def stage_module(name: str) -> ModuleType:
    """Import the module that runs stage `name`."""
    if name not in STAGE_MODULES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_MODULES)}")
    return importlib.import_module(STAGE_MODULES[name])
