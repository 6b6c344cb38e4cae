"""Helpers for the TPU-path tests: the TPU environment, tiny shards and stage configs.

The main environment (torch 2.13.0) has no torch-xla; the TPU path runs in `.venv-tpu`
(torch 2.9.0 + torch-xla 2.9.0, made by `scripts/setup-tpu-venv.sh`) as a subprocess on
XLA's CPU backend with four virtual devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specc.runtime.shards import ShardWriter, write_meta

ROOT = Path(__file__).resolve().parent.parent.parent
VOCAB = 256
TPU_PYTHON = Path(os.environ.get("SPECC_TPU_PYTHON", ROOT / ".venv-tpu" / "bin" / "python"))


def require_tpu_env() -> None:
    """Skip (with the command that fixes it) when the TPU environment is absent."""
    if not TPU_PYTHON.exists():
        pytest.skip(f"TPU environment not found at {TPU_PYTHON}: run scripts/setup-tpu-venv.sh "
                    f"(or scripts/test.sh without SPECC_SKIP_TPU=1), or set SPECC_TPU_PYTHON")


def make_shards(directory: Path, num_documents: int = 120, seed: int = 0) -> Path:
    """Documents of noisy arithmetic progressions: learnable, so the loss must fall."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", num_documents), ("validation", max(8, num_documents // 10))):
        writer = ShardWriter(directory, split, VOCAB, eos_id=VOCAB - 1, tokens_per_shard=4000)
        for _ in range(count):
            start, stride, length = rng.integers(0, VOCAB - 1), rng.integers(1, 5), rng.integers(40, 120)
            tokens = (start + stride * np.arange(length)) % (VOCAB - 1)
            noise = rng.random(length) < 0.05
            tokens[noise] = rng.integers(0, VOCAB - 1, noise.sum())
            writer.add(tokens.tolist())
        splits[split] = writer.close()
    write_meta(directory, VOCAB, VOCAB - 1, splits)
    return directory


MODEL = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=128, activation="swiglu",
             norm="rmsnorm", position="rope", vocab_size=VOCAB, max_seq_len=64, tie_embeddings=True)


def schedule(**overrides) -> dict:
    values = dict(lr=3e-3, min_lr=3e-4, warmup_steps=2, decay="cosine", seq_len=32, global_batch_size=8,
                  steps=8, checkpoint_interval=3, keep_checkpoints=2, eval_interval=8, eval_batches=1,
                  log_interval=1, seed=0)
    values.update(overrides)
    return values


CPU_PARALLEL = {"dp": 1, "micro_batch": 4, "precision": "fp32"}
"""The GPU path's single-process reference layout."""
SPMD_PARALLEL = {"dp": 2, "fsdp": True, "tp": 2, "micro_batch": 2, "precision": "fp32"}
"""(2, 2) fsdp x tensor over four XLA CPU devices: global micro-batch 4, two accumulation steps."""


def write_stage_config(run_dir: Path, stage: str, parallel: dict, shard_dir: Path, accelerator: str,
                       devices: int, **schedule_overrides) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"stage": stage, "run_dir": str(run_dir),
              "params": {"model": MODEL, "parallel": parallel, "schedule": schedule(**schedule_overrides),
                         "devices": devices, "accelerator": accelerator, "predicted": None,
                         "shard_dir": str(shard_dir)}}
    path = run_dir / "config.json"
    path.write_text(json.dumps(config))
    return path


def tpu_env() -> dict:
    """XLA's CPU backend with four devices; the repository on the path (specc need not be installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "XLA_FLAGS")}
    env.update(PJRT_DEVICE="CPU", CPU_NUM_DEVICES="4", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def cpu_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def tpu_command(config: Path) -> list[str]:
    return [str(TPU_PYTHON), "-m", "specc.runtime", str(config)]


def cpu_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "specc.runtime", str(config)]


def run_stage(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
