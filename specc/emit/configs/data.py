"""The `data` and `tokenize` stage configs, built from a validated spec (torch-free, cheap to import).

The bundle emitter writes these under `"params"` in each stage's `config.json`; the stages
re-validate them with the same spec models.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PART_DOCUMENTS = 2000
"""Documents per part: the unit of parallel work and of resumption."""


def build_data_config(spec, spec_dir: str | Path, part_documents: int = DEFAULT_PART_DOCUMENTS) -> dict:
    """Config of the `data` stage; `spec_dir` is the directory relative globs resolve against."""
    if spec.corpus is None:
        raise ValueError("the spec has no `corpus` section: there is no data stage to run")
    config = {
        "corpus": spec.corpus.model_dump(mode="json"),
        "filters": [f.model_dump(mode="json") for f in spec.filters],
        "dedup": spec.dedup.model_dump(mode="json"),
        "spec_dir": str(Path(spec_dir).resolve()),
        "part_documents": part_documents,
    }
    if spec.cluster.executor == "slurm" and spec.cluster.slurm.data_array_tasks > 1:
        config["array_tasks"] = spec.cluster.slurm.data_array_tasks
    from specc.plan.data_stage import bucket_tasks  # imports this module: not at the top

    config["bucket_tasks"] = bucket_tasks(spec)
    return config


def build_tokenize_config(spec, spec_dir: str | Path | None = None) -> dict:
    """Config of the `tokenize` stage (a `tokenizer.path` resolves against `spec_dir`)."""
    if spec.corpus is None:
        raise ValueError("the spec has no `corpus` section: there is no tokenize stage to run")
    tokenizer = spec.tokenizer.model_dump(mode="json")
    if tokenizer.get("path") and spec_dir is not None and not Path(tokenizer["path"]).is_absolute():
        tokenizer["path"] = str((Path(spec_dir) / tokenizer["path"]).resolve())
    return {
        "tokenizer": tokenizer,
        "corpus": spec.corpus.model_dump(mode="json"),
        "model_vocab_size": spec.model.vocab_size,
    }
