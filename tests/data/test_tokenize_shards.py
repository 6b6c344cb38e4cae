"""The tokenize stage end to end with its tiktoken encoder (issue 18, item 6): the shards hold
exactly the `tokenizers` ids of every document, non-ASCII and literal special tokens included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import stage_config, write_jsonl

from specc.runtime.data import stage as data_stage
from specc.runtime.data.documents import read_documents
from specc.runtime.shards import open_split
from specc.runtime.tokenizer import stage as tokenize_stage
from specc.runtime.tokenizer.bpe import encode, load_tokenizer

SPECIAL = ["<|endoftext|>", "<|pad|>"]
CORPUS = {"sources": [{"type": "synthetic", "name": "prose", "num_documents": 150, "seed": 4},
                      {"type": "files", "name": "web", "path": "web/*.jsonl"}],
          "validation_fraction": 0.1, "seed": 2}


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokenize-shards")
    write_jsonl(base / "web" / "a.jsonl", [
        {"text": f"Grüße aus Łódź {i}: 東京 🙂 it's   spaced\t\tout, a literal <|endoftext|> and 3.14 ×{i}"}
        for i in range(30)] + [{"text": "x"}])
    run_dir = base / "run"
    data_stage.run(stage_config("data", run_dir, {"corpus": CORPUS, "filters": [], "dedup": {"exact": True},
                                                  "spec_dir": str(base), "part_documents": 60}))
    return run_dir


def _tokenize(run_dir, sample_documents: int) -> dict:
    params = {"tokenizer": {"vocab_size": 400, "sample_documents": sample_documents, "compare_vocab_sizes": [],
                            "special_tokens": SPECIAL}, "corpus": CORPUS, "model_vocab_size": 400}
    tokenize_stage.run(stage_config("tokenize", run_dir, params))
    return params


@pytest.mark.slow  # the data and tokenize stages end to end
def test_the_shards_hold_the_tokenizers_ids_of_every_document(data_run):
    _tokenize(data_run, sample_documents=10 ** 6)
    stage_dir = data_run / "tokenize"
    data_dir = data_run / "data"
    files = tokenize_stage.read_manifest(data_dir)
    tokenizer = load_tokenizer(stage_dir / "tokenizer.json", SPECIAL)
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["encoder"]["name"] == "tiktoken" and stats["encoder"]["documents_encoded_by_tokenizers"] == 0
    documents = [d for entry in files for d in read_documents(data_dir / entry["file"])]
    split_of = {(d.source, d.id): "validation" if tokenize_stage.is_validation(d.source, d.id, 2, 0.1) else "train"
                for d in documents}
    shards = stage_dir / "shards"
    for split in ("train", "validation"):
        texts = [d.text for d in documents if split_of[(d.source, d.id)] == split]
        expected = [ids + [0] for ids in encode(tokenizer, texts)]
        tokens = np.concatenate(open_split(shards, split).arrays).tolist()
        assert tokens == [t for ids in expected for t in ids]
    assert any("<|endoftext|>" in d.text for d in documents)
