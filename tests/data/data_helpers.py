"""Shared helpers for the data-stage tests: small synthetic corpora and stage configs."""

from __future__ import annotations

import json
from pathlib import Path

from specc.runtime.data.synthetic import generate
from specc.spec.data import SyntheticSource


def synthetic_source(num_documents: int = 600, seed: int = 11, duplicate_fraction: float = 0.15,
                     junk_fraction: float = 0.15, name: str = "prose") -> SyntheticSource:
    return SyntheticSource(type="synthetic", name=name, num_documents=num_documents, seed=seed,
                           duplicate_fraction=duplicate_fraction, junk_fraction=junk_fraction)


def synthetic_documents(**options) -> list:
    return [generated.document for generated in generate(synthetic_source(**options))]


def stage_config(stage: str, run_dir: Path, params: dict, path: Path | None = None) -> dict:
    config = {"stage": stage, "run_dir": str(run_dir), "params": params}
    if path is not None:
        path.write_text(json.dumps(config))
    return config


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_texts(directory: Path, texts: list[str], prefix: str = "doc") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index, text in enumerate(texts):
        (directory / f"{prefix}-{index:04d}.txt").write_text(text)
