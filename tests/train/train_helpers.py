"""Shared helpers for the training tests: tiny shards, tiny specs, config files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from specc.runtime.shards import ShardWriter, write_meta

VOCAB = 256


def make_shards(directory: Path, vocab_size: int = VOCAB, num_documents: int = 120, seed: int = 0) -> Path:
    """Documents of noisy arithmetic progressions: learnable, so the loss must fall."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", num_documents), ("validation", max(8, num_documents // 10))):
        writer = ShardWriter(directory, split, vocab_size, eos_id=vocab_size - 1, tokens_per_shard=4000)
        for _ in range(count):
            start, stride, length = rng.integers(0, vocab_size - 1), rng.integers(1, 5), rng.integers(40, 120)
            tokens = (start + stride * np.arange(length)) % (vocab_size - 1)
            noise = rng.random(length) < 0.05
            tokens[noise] = rng.integers(0, vocab_size - 1, noise.sum())
            writer.add(tokens.tolist())
        splits[split] = writer.close()
    write_meta(directory, vocab_size, vocab_size - 1, splits)
    return directory


def tiny_model(**overrides) -> dict:
    model = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=128,
                 activation="swiglu", norm="rmsnorm", position="rope", vocab_size=VOCAB, max_seq_len=64,
                 tie_embeddings=False)
    model.update(overrides)
    return model


def tiny_schedule(**overrides) -> dict:
    schedule = dict(lr=3e-3, min_lr=3e-4, warmup_steps=2, decay="cosine", seq_len=32, global_batch_size=8,
                    steps=12, checkpoint_interval=4, eval_interval=0, eval_batches=2, log_interval=1, seed=0)
    schedule.update(overrides)
    return schedule


def stage_config(run_dir: Path, model: dict, schedule: dict, parallel: dict | None = None, **params) -> dict:
    return {"stage": "pretrain", "run_dir": str(run_dir),
            "params": {"model": model, "parallel": parallel or {"dp": 1, "micro_batch": 4, "precision": "fp32"},
                       "schedule": schedule, "devices": 1, "accelerator": "cpu", "predicted": None, **params}}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses_by_step(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(path) if "loss" in r}
