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


def write_saved_dataset(directory: Path, columns: dict[str, list], shards: int = 1) -> Path:
    """A `datasets` `Dataset.save_to_disk` directory, written as `datasets` 2.x/3.x writes it:
    `.arrow` shards in the Arrow IPC stream format, listed in state.json, and dataset_info.json."""
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    size = -(-table.num_rows // shards)
    names = []
    for index in range(shards):
        name = f"data-{index:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(index * size, size))
        names.append(name)
    (directory / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": name} for name in names], "_fingerprint": "0123456789abcdef",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
        "_split": None}))
    (directory / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "homepage": "",
                                                             "license": ""}))  # specc reads the schema from the shards
    return directory


def write_dataset_dict(directory: Path, splits: dict[str, dict[str, list]]) -> Path:
    """A `DatasetDict.save_to_disk` directory: dataset_dict.json and one saved dataset per split."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    for split, columns in splits.items():
        write_saved_dataset(directory / split, columns)
    return directory
