"""`python -m specc.runtime <config.json>`: run one stage of a bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from specc.integrity import StageError
from specc.runtime.stages import module_for_config
from specc.runtime.tracking import configure as configure_tracking


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m specc.runtime <config.json>", file=sys.stderr)
        return 1
    config_path = Path(args[0])
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"specc.runtime: cannot read {config_path}: {error}", file=sys.stderr)
        return 1
    try:
        module = module_for_config(config)
    except KeyError as error:
        print(f"specc.runtime: {error.args[0]}", file=sys.stderr)
        return 1
    configure_tracking(config, config_path)
    try:
        module.run(config)
    except StageError as error:
        # damaged inputs, a full disk, a diverged loss: the user's to act on, one line, no traceback
        print(f"specc {config.get('stage', 'stage')}: error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
