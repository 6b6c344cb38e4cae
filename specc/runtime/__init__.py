"""The stage runtime: code that runs inside jobs (the only part of specc that imports torch).

Contract shared by every stage (see `specc.runtime.stages`):
- a stage is a module with `run(config: dict) -> None`; its `config.json` (written by
  the bundle emitter) holds `{"stage": <name>, "run_dir": <dir shared by all stages>,
  "params": {...its own settings...}}` and nothing else of the spec;
- a stage writes its outputs under `<run_dir>/<stage>/`, metrics to
  `<run_dir>/<stage>/metrics.jsonl`, and last of all a `_SUCCESS.json` marker recording
  the hash of its config and inputs (so relaunching skips completed stages);
- a stage is resumable: killed and restarted with the same config, it continues
  from its last checkpoint and produces the same result;
- entry point: `python -m specc.runtime <config.json>`.
"""
