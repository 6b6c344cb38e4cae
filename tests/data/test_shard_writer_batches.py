"""The tokenize stage's batches: `read_batches` streams a part file's documents from a reader
thread, and `ShardWriter.add_many` writes exactly what `add` one document at a time writes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from specc.runtime.data.documents import Document, write_documents
from specc.runtime.shards import ShardWriter
from specc.runtime.tokenizer.stage import read_batches


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


def _part(tmp_path, texts):
    path = tmp_path / "part.jsonl.gz"
    write_documents(path, [Document("s", str(i), text) for i, text in enumerate(texts)])
    return path


def test_read_batches_gives_every_document_in_order_cut_by_count_and_characters(tmp_path):
    texts = [str(i) * (1 + i % 5) for i in range(100)]
    batches = list(read_batches(_part(tmp_path, texts), size=8, max_chars=12))
    assert [d.text for b in batches for d in b] == texts
    assert all(len(b) <= 8 and sum(len(d.text) for d in b[:-1]) < 12 for b in batches)


def test_read_batches_raises_the_readers_error_and_stops_when_abandoned(tmp_path):
    path = _part(tmp_path, ["text"] * 50)
    path.write_bytes(path.read_bytes()[:-20])  # a truncated gzip stream
    with pytest.raises(EOFError):
        list(read_batches(path, size=4))
    batches = read_batches(_part(tmp_path, ["text"] * 500), size=1)
    next(batches)
    batches.close()  # the reader thread, blocked on a full queue, must end
