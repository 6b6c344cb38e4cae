"""Stage config -> the module that runs it (from the registry, `specc.pipeline`), and the
skip-if-complete check every stage's `run` shares.

Modules are imported only when their stage runs, so importing this is cheap and never pulls
in torch.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from specc.io import is_complete, success_marker
from specc.pipeline import kind_of, output_dirname


def module_for_config(config: dict) -> ModuleType:
    """The module that runs a stage config: its kind's runtime entry point (KeyError if none)."""
    return importlib.import_module(kind_of(config).module)


def skips_when_complete(run: Callable[[dict], None]) -> Callable[[dict], None]:
    """Wrap a stage's `run(config)`: return at once when the stage already finished with this
    exact config and its recorded outputs are intact (`specc.io.is_complete`), saying so once
    (rank 0 of a multi-process stage); otherwise run it. A relaunch, or a requeued job that
    finished before it was killed, then costs a stat per output."""

    @functools.wraps(run)
    def run_unless_complete(config: dict) -> None:
        out_dir = Path(config["run_dir"]) / output_dirname(config["stage"])
        if is_complete(out_dir, config):
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"{config['stage']}: already complete ({success_marker(out_dir)})", flush=True)
            return
        run(config)

    return run_unless_complete
