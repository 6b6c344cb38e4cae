"""Helpers and fixtures shared by the alignment, evaluation and deployment tests (importable by
name because pytest puts this directory on sys.path).

There is deliberately no conftest.py here: the top-level tests import `conftest` by name, and a
second conftest module would shadow it. Test modules import the fixtures they use from here; the
expensive ones are cached per session so that several modules share one instance.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import pytest

from specc.spec.model import ModelSpec

VOCAB = 384


def tiny_model_spec(**overrides) -> ModelSpec:
    """A two-layer, 32-wide GQA model: a few tens of thousands of parameters."""
    fields = dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, ffn_hidden_size=64,
                  vocab_size=VOCAB, max_seq_len=128, tie_embeddings=True)
    fields.update(overrides)
    return ModelSpec(**fields)


def offline_eval_model(directory: Path, tokenizer_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny untrained model and the tokenizer in `directory` (model/, tokenizer.json), with the
    Hugging Face libraries kept offline and their cache inside it: what an eval-stage test reads."""
    from specc.runtime.infer.weights import save_model
    from specc.runtime.train.model import build_model

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_HOME", str(directory / "hf_home"))
    save_model(build_model(tiny_model_spec(max_seq_len=256), seed=3).eval(), directory / "model")
    shutil.copy(tokenizer_file, directory / "tokenizer.json")


def pretrain_tiny(codec, spec: ModelSpec, steps: int, seed: int = 0, seq_len: int = 64, batch: int = 8,
                  lr: float = 3e-3):
    """A tiny model trained by plain next-token prediction on the generated corpus (for tests that
    need a model that has learned something)."""
    import torch

    from specc.runtime.evaluate.tiny import tiny_corpus
    from specc.runtime.train.model import build_model

    torch.manual_seed(seed)
    stream = []
    for document in tiny_corpus(seed=seed + 100, num_documents=400):
        stream.extend(codec.encode(document) + [codec.eos_id])
    data = torch.tensor(stream)
    model = build_model(spec, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=generator)
        window = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
        logits = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def write_tiny_shards(directory: Path, codec) -> None:
    """Token shards in the tokenize stage's format: generated text, train and validation splits."""
    from specc.runtime.evaluate.tiny import tiny_corpus
    from specc.runtime.shards import ShardWriter, write_meta

    splits = {}
    for split, seed, count in (("train", 200, 200), ("validation", 300, 40)):
        writer = ShardWriter(directory, split, codec.tokenizer.get_vocab_size(), codec.eos_id)
        for document in tiny_corpus(seed=seed, num_documents=count):
            writer.add(codec.encode(document))
        splits[split] = writer.close()
    write_meta(directory, codec.tokenizer.get_vocab_size(), codec.eos_id, splits)


_SESSION: dict[str, Path] = {}
"""One tokenizer per test session, whichever module asks first."""


def _tokenizer(factory: pytest.TempPathFactory) -> Path:
    from specc.runtime.evaluate.tiny import tiny_corpus, train_tiny_tokenizer

    if "tokenizer" not in _SESSION:
        texts = tiny_corpus(seed=0, num_documents=300)
        texts += ["<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", "The opposite of"]
        _SESSION["tokenizer"] = train_tiny_tokenizer(texts, VOCAB, factory.mktemp("tokenizer") / "tokenizer.json")
    return _SESSION["tokenizer"]


@lru_cache(maxsize=None)
def _pretrained(tokenizer_file: Path):
    from specc.runtime.infer.weights import load_codec

    return pretrain_tiny(load_codec(tokenizer_file), tiny_model_spec(hidden_size=64, ffn_hidden_size=128), steps=120)


@pytest.fixture(scope="module", autouse=True)
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
    """A byte-level BPE trained on the generated corpus (vocabulary VOCAB)."""
    return _tokenizer(tmp_path_factory)


@pytest.fixture(scope="session")
def codec(tokenizer_path):
    from specc.runtime.infer.weights import load_codec

    return load_codec(tokenizer_path)


@pytest.fixture(scope="session")
def pretrained(tokenizer_path):
    """A tiny model after a short pretraining run on the generated corpus (shared: do not modify)."""
    return _pretrained(tokenizer_path)


@pytest.fixture
def run_dir(tmp_path, pretrained, tokenizer_path) -> Path:
    """A run directory as the pipeline leaves it after pretraining: pretrain/final and tokenize/."""
    from specc.runtime.infer.weights import load_codec, save_model

    save_model(pretrained, tmp_path / "pretrain" / "final")
    (tmp_path / "tokenize").mkdir()
    shutil.copy(tokenizer_path, tmp_path / "tokenize" / "tokenizer.json")
    write_tiny_shards(tmp_path / "tokenize" / "shards", load_codec(tokenizer_path))
    return tmp_path
