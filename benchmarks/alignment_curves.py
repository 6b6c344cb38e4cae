"""SFT, reward model, DPO and PPO curves on a small model trained here, run through the same
stage code and params as `specs/tiny.yaml` (only the pretrained model and data are local).

    .venv/bin/python benchmarks/alignment_curves.py [--steps 400] [--json out.json]

Prints per-step SFT loss, reward-model accuracy, DPO loss / reward accuracy / margin, and PPO
reward / KL, then the tiny eval tasks for each policy. Seeded: two runs print the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_quality import TARGET, prepare_data, pretrain  # noqa: E402

from specc.diagnostics.check import check_file  # noqa: E402
from specc.emit.configs.alignment import build_alignment_configs  # noqa: E402
from specc.emit.configs.evaluate import build_eval_config  # noqa: E402
from specc.runtime.infer.weights import save_model  # noqa: E402
from specc.runtime.stages import module_for_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"sft": ("loss",), "reward_model": ("loss", "accuracy", "margin"),
           "dpo": ("loss", "reward_accuracy", "reward_margin"), "ppo": ("reward", "kl", "clip_fraction")}


def run(name: str, run_dir: Path, params: dict) -> None:
    config = {"stage": name, "run_dir": str(run_dir), "params": json.loads(json.dumps(params))}
    module_for_config(config).run(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="pretraining steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = check_file(ROOT / "specs" / "tiny.yaml").spec
    spec = spec.model_copy(update={"model": TARGET})
    curves, tables = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch)
        (run_dir / "tokenize").mkdir()
        prepare_data(run_dir / "tokenize")
        save_model(pretrain(run_dir / "tokenize" / "shards", args.steps), run_dir / "pretrain" / "final")
        for name, params in build_alignment_configs(spec, str(ROOT / "specs")):
            run(name, run_dir, params)
            rows = [json.loads(line) for line in (run_dir / name / "metrics.jsonl").read_text().splitlines()]
            kind = params["stage"]["type"]
            curves[name] = [{"step": r["step"], **{c: r[c] for c in COLUMNS[kind]}} for r in rows]
            print(f"\n{name} ({kind}): " + ", ".join(COLUMNS[kind]))
            for row in curves[name]:
                print(f"  {row['step']:3d}  " + "  ".join(f"{row[c]:+.4f}" for c in COLUMNS[kind]))
        run("eval", run_dir, build_eval_config(spec, str(ROOT / "specs")))
        tables = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
        print("\n" + (run_dir / "eval" / "results.md").read_text())
    if args.json:
        args.json.write_text(json.dumps({"curves": curves, "eval": tables}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
