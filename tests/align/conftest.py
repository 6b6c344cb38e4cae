"""Fixtures for the alignment, evaluation and deployment tests: a tiny tokenizer trained on
generated text and tiny models (a few thousand parameters), all on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from align_helpers import VOCAB


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two spinning
    threads per process run many times slower than one."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    from specc.runtime.evaluate.tiny import tiny_corpus, train_tiny_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    texts = tiny_corpus(seed=0, num_documents=300)
    texts += ["<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", "The opposite of"]
    return train_tiny_tokenizer(texts, VOCAB, path)


@pytest.fixture(scope="session")
def codec(tokenizer_path):
    from specc.runtime.infer.weights import load_codec

    return load_codec(tokenizer_path)


@pytest.fixture(scope="session")
def pretrained(codec):
    """A tiny model after a short pretraining run on the generated corpus."""
    from align_helpers import pretrain_tiny, tiny_model_spec

    return pretrain_tiny(codec, tiny_model_spec(hidden_size=64, ffn_hidden_size=128), steps=120)


@pytest.fixture
def run_dir(tmp_path, pretrained, tokenizer_path) -> Path:
    """A run directory as the pipeline leaves it after pretraining: pretrain/final and tokenize/."""
    import shutil

    from align_helpers import write_tiny_shards
    from specc.runtime.infer.weights import load_codec, save_model

    save_model(pretrained, tmp_path / "pretrain" / "final")
    (tmp_path / "tokenize").mkdir()
    shutil.copy(tokenizer_path, tmp_path / "tokenize" / "tokenizer.json")
    write_tiny_shards(tmp_path / "tokenize" / "shards", load_codec(tokenizer_path))
    return tmp_path

