"""`ShardWriter.add_many` writes exactly what `add` one document at a time writes (the tokenize
stage adds a batch of encoded documents at once)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from specc.runtime.shards import ShardWriter


def _write(directory, documents, batched: bool, vocab_size: int = 1000) -> tuple[list[dict], dict[str, bytes]]:
    writer = ShardWriter(directory, "train", vocab_size, eos_id=0, tokens_per_shard=50)
    if batched:
        for start in range(0, len(documents), 7):
            writer.add_many(documents[start:start + 7])
    else:
        for document in documents:
            writer.add(document)
    shards = writer.close()
    return shards, {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_batches_give_the_same_shards_as_single_documents(tmp_path):
    rng = random.Random(0)
    documents = [[rng.randrange(1, 1000) for _ in range(rng.choice([0, 1, 3, 20, 49, 60]))] for _ in range(60)]
    mixed = [np.asarray(d, dtype=np.uint32) if i % 2 else d for i, d in enumerate(documents)]
    one, one_files = _write(tmp_path / "one", documents, batched=False)
    many, many_files = _write(tmp_path / "many", mixed, batched=True)
    assert json.dumps(one) == json.dumps(many) and one_files == many_files and len(one) > 5


@pytest.mark.parametrize("bad", [[70000], [-1]])
def test_an_id_outside_the_shard_dtype_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="outside uint16"):
        ShardWriter(tmp_path, "train", 1000, eos_id=0).add_many([[1, 2], bad])
