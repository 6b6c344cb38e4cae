"""Helpers shared by the alignment, evaluation and deployment tests (importable by name
because pytest puts this directory on sys.path)."""

from __future__ import annotations

from pathlib import Path

from specc.spec.model import ModelSpec

VOCAB = 384


def tiny_model_spec(**overrides) -> ModelSpec:
    """A two-layer, 32-wide GQA model: a few tens of thousands of parameters."""
    fields = dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, ffn_hidden_size=64,
                  vocab_size=VOCAB, max_seq_len=128, tie_embeddings=True)
    fields.update(overrides)
    return ModelSpec(**fields)


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
