"""The `tokenize` stage: byte-level BPE on a seeded sample, compression report, token shards.

Reads `<run_dir>/data/manifest.json`; writes under `<run_dir>/tokenize/`:
    tokenizer.json                the tokenizer (trained, or a copy of `tokenizer.path`)
    baselines/tokenizer-<V>.json  baselines at `compare_vocab_sizes`, trained the same way
    compression.json              bytes/token and tokens/word per source on held-out text
    shards/meta.json + shards/parts/<data part>/{train,validation}-NNNNN.bin
                                  packed tokens (specc.runtime.shards format), EOS-separated
    stats.json, summary.txt, metrics.jsonl, _SUCCESS.json
A document goes to validation when a seeded hash of (source, id) falls below
`corpus.validation_fraction`: every copy of a repeated document lands in the same split,
and the tokenizer never trains on validation text, so compression is measured held out.
Resumption: the tokenizer files and every finished data part's shards are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import shutil
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from specc.integrity import StageError, entry_problem, storage_errors
from specc.runtime.data.documents import DataError, read_documents
from specc.runtime.data.progress import Progress, log
from specc.runtime.data.stage import prepare_stage_dir
from specc.runtime.io import (MetricsWriter, atomic_write_json, atomic_write_text, check_upstream,
                              mark_success)
from specc.runtime.shards import ShardWriter, dtype_for_vocab, entries_of, write_meta
from specc.runtime.stages import skips_when_complete
from specc.runtime.tokenizer.bpe import Encoder, compression, load_tokenizer, save_tokenizer, train_bpe
from specc.spec.data import CorpusSpec, TokenizerSpec

HELD_OUT_PER_SOURCE = 500
"""Validation documents per source used for the compression report."""
CHECK_DOCUMENTS = 32
"""Training and held-out documents per source encoded both ways before the shards (bpe.Encoder)."""
ENCODE_BATCH = 4096
ENCODE_BATCH_CHARS = 4_000_000
"""Documents (at most) and characters (about) per encoding call: large enough that splitting it
over threads pays, small enough that reading the next batch overlaps encoding this one and that
the batches in flight stay tens of MB."""


def is_validation(source: str, doc_id: str, seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}\0{source}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def read_manifest(data_dir: Path) -> list[dict]:
    path = data_dir / "manifest.json"
    if not path.exists():
        raise DataError(f"{path} is missing: run the data stage first")
    return json.loads(path.read_text())["files"]


def iter_unique(data_dir: Path, files: list[dict]):
    """Each document once (copies from mixture epochs are adjacent in a part file)."""
    previous = None
    for entry in files:
        for document in read_documents(data_dir / entry["file"]):
            key = (document.source, document.id)
            if key != previous:
                yield document
            previous = key


def sample_texts(data_dir: Path, files: list[dict], corpus: CorpusSpec, size: int) -> tuple[list[str], dict]:
    """A seeded reservoir sample of training documents, and held-out texts per source."""
    rng = random.Random(corpus.seed)
    reservoir: list[str] = []
    seen = 0
    held_out: dict[str, list[str]] = {}
    for document in iter_unique(data_dir, files):
        if is_validation(document.source, document.id, corpus.seed, corpus.validation_fraction):
            texts = held_out.setdefault(document.source, [])
            if len(texts) < HELD_OUT_PER_SOURCE:
                texts.append(document.text)
            continue
        seen += 1
        if len(reservoir) < size:
            reservoir.append(document.text)
        else:
            slot = rng.randrange(seen)
            if slot < size:
                reservoir[slot] = document.text
    return reservoir, held_out


def get_tokenizer(spec: TokenizerSpec, vocab_size: int, sample: list[str], path: Path):
    if path.exists():
        return load_tokenizer(path, spec.special_tokens), 0.0
    started = time.perf_counter()
    if spec.path is not None:
        tokenizer = load_tokenizer(Path(spec.path), spec.special_tokens)
    else:
        if not sample:
            raise DataError("no training documents to train the tokenizer on (all held out or none kept)")
        tokenizer = train_bpe(sample, vocab_size, spec.special_tokens, spec.min_frequency)
    seconds = time.perf_counter() - started
    save_tokenizer(tokenizer, path)
    return tokenizer, seconds


def compression_report(stage_dir: Path, spec: TokenizerSpec, tokenizer, sample: list[str],
                       held_out: dict[str, list[str]]) -> dict:
    tokenizers = {tokenizer.get_vocab_size(): tokenizer}
    for size in sorted(set(spec.compare_vocab_sizes) - {tokenizer.get_vocab_size()}):
        tokenizers[size], _ = get_tokenizer(spec.model_copy(update={"path": None}), size, sample,
                                            stage_dir / "baselines" / f"tokenizer-{size}.json")
    report = {"held_out_documents_per_source": HELD_OUT_PER_SOURCE, "tokenizer_vocab_size": tokenizer.get_vocab_size(),
              "sources": {}}
    for source, texts in sorted(held_out.items()):
        report["sources"][source] = {str(size): compression(t, texts) for size, t in sorted(tokenizers.items())}
    return report


def read_batches(path: Path, size: int, max_chars: int = ENCODE_BATCH_CHARS):
    """The documents of a part file in lists of `size` (or fewer holding `max_chars`), read and
    parsed by a background thread while the caller encodes the previous list (gzip and JSON then
    overlap tiktoken, which releases the GIL); at most two lists wait in memory."""
    batches: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            batch: list = []
            chars = 0
            for document in read_documents(path):
                batch.append(document)
                chars += len(document.text)
                if len(batch) >= size or chars >= max_chars:
                    if not _put(batches, batch, stop):
                        return
                    batch, chars = [], 0
            _put(batches, batch, stop)
            _put(batches, None, stop)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            _put(batches, error, stop)

    reader = threading.Thread(target=produce, name=f"read {path.name}", daemon=True)
    reader.start()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _put(batches: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the consumer stopped (then the reader must not block forever on a full queue)."""
    while not stop.is_set():
        try:
            batches.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def write_part(shards_dir: Path, data_dir: Path, entry: dict, tokenizer, eos_id: int, corpus: CorpusSpec,
               encoder: Encoder) -> dict:
    """Tokenize one data output file into its own train and validation shards; marker last."""
    stem = Path(entry["file"]).name.removesuffix(".jsonl.gz")
    part_dir = shards_dir / "parts" / stem
    marker = part_dir / "part.json"
    vocab_size = tokenizer.get_vocab_size()
    if marker.exists():
        record = json.loads(marker.read_text())
        shards = [dict(s, file=Path(s["file"]).name) for split in record["shards"].values() for s in split]
        entries = entries_of(shards, dtype_for_vocab(vocab_size).itemsize)
        if not any(entry_problem(part_dir / e["file"], e, checksum=False) for e in entries):
            return record | {"skipped": True}
        log("tokenize", f"{part_dir}: finished earlier but its shards changed since; encoding it again")
    if part_dir.exists():
        shutil.rmtree(part_dir)  # an unfinished (or since damaged) part from an earlier run
    writers = {split: ShardWriter(part_dir, split, vocab_size, eos_id) for split in ("train", "validation")}
    tokens = {"train": 0, "validation": 0}
    documents = {"train": 0, "validation": 0}
    for batch in read_batches(data_dir / entry["file"], ENCODE_BATCH):
        encoded = encoder.encode([d.text for d in batch])
        splits = ["validation" if is_validation(d.source, d.id, corpus.seed, corpus.validation_fraction) else "train"
                  for d in batch]
        for split, writer in writers.items():
            mine = [ids for ids, s in zip(encoded, splits) if s == split]
            writer.add_many(mine)
            tokens[split] += sum(len(ids) + 1 for ids in mine)
            documents[split] += len(mine)
    shards = {split: [dict(s, file=f"parts/{stem}/{s['file']}") for s in writer.close()]
              for split, writer in writers.items()}
    record = {"source": entry["source"], "file": entry["file"], "shards": shards, "tokens": tokens,
              "documents": documents}
    atomic_write_json(marker, record)
    return record


def parse_stage_config(params: dict) -> tuple[TokenizerSpec, CorpusSpec, int]:
    try:
        return (TokenizerSpec.model_validate(params["tokenizer"]), CorpusSpec.model_validate(params["corpus"]),
                int(params["model_vocab_size"]))
    except KeyError as error:
        raise DataError(f"config params lack {error.args[0]!r}") from None
    except ValidationError as error:
        raise DataError(f"config params are not a valid spec section:\n{error}") from None


def run_stage(config: dict, stage_dir: Path, metrics: MetricsWriter) -> dict:
    spec, corpus, model_vocab_size = parse_stage_config(config["params"])
    if spec.path is None and spec.vocab_size > model_vocab_size:
        raise DataError(f"tokenizer.vocab_size ({spec.vocab_size}) exceeds model.vocab_size ({model_vocab_size}): "
                        "token ids would fall outside the embedding table")
    data_dir = Path(config["run_dir"]) / "data"
    files = read_manifest(data_dir)
    metrics.write(event="phase", phase="sampling")
    sample, held_out = sample_texts(data_dir, files, corpus, spec.sample_documents)
    metrics.write(event="phase", phase="training tokenizer", sample_documents=len(sample))
    tokenizer, train_seconds = get_tokenizer(spec, spec.vocab_size, sample, stage_dir / "tokenizer.json")
    if tokenizer.get_vocab_size() > model_vocab_size:
        raise DataError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but model.vocab_size is "
                        f"{model_vocab_size}: raise model.vocab_size or use a smaller tokenizer")
    eos_id = tokenizer.token_to_id(spec.special_tokens[0])
    metrics.write(event="tokenizer", vocab_size=tokenizer.get_vocab_size(), train_seconds=round(train_seconds, 3),
                  sample_documents=len(sample))
    report = compression_report(stage_dir, spec, tokenizer, sample, held_out)
    atomic_write_json(stage_dir / "compression.json", report)

    shards_dir = stage_dir / "shards"
    metrics.write(event="phase", phase="encoding", parts_total=len(files))
    encoder = Encoder(tokenizer, threads=len(os.sched_getaffinity(0)),
                      sample=sample[:CHECK_DOCUMENTS] + [t for texts in held_out.values() for t in texts[:CHECK_DOCUMENTS]])
    log("tokenize", f"encoding with {encoder.name} on {encoder.threads} thread(s)")
    progress = Progress("tokenize", f"encoding {len(files)} data part(s)", total=len(files))
    records, encoded_seconds, encoded_tokens = [], 0.0, 0
    for entry in files:
        started = time.perf_counter()
        record = write_part(shards_dir, data_dir, entry, tokenizer, eos_id, corpus, encoder)
        records.append(record)
        if not record.get("skipped"):
            encoded_seconds += time.perf_counter() - started
            encoded_tokens += sum(record["tokens"].values())
        metrics.write(event="part", file=entry["file"], tokens=record["tokens"], skipped=bool(record.get("skipped")))
        progress.advance(f"{entry['file']}: {sum(record['tokens'].values()):,} tokens")
    progress.close()
    splits = {split: [s for r in records for s in r["shards"][split]] for split in ("train", "validation")}
    write_meta(shards_dir, tokenizer.get_vocab_size(), eos_id, splits)
    stats = _stats(records, tokenizer, eos_id, train_seconds, encoded_seconds, encoded_tokens, report)
    stats["encoder"] = encoder.description()
    atomic_write_json(stage_dir / "stats.json", stats)
    atomic_write_text(stage_dir / "summary.txt", _summary(stats))
    return stats


def _stats(records, tokenizer, eos_id, train_seconds, encoded_seconds, encoded_tokens, report) -> dict:
    sources: dict[str, dict] = {}
    for record in records:
        totals = sources.setdefault(record["source"], {"train_tokens": 0, "validation_tokens": 0,
                                                        "train_documents": 0, "validation_documents": 0})
        for split in ("train", "validation"):
            totals[f"{split}_tokens"] += record["tokens"][split]
            totals[f"{split}_documents"] += record["documents"][split]
    total = sum(s["train_tokens"] + s["validation_tokens"] for s in sources.values()) or 1
    for totals in sources.values():
        totals["proportion"] = round((totals["train_tokens"] + totals["validation_tokens"]) / total, 4)
    return {"vocab_size": tokenizer.get_vocab_size(), "eos_id": eos_id, "sources": sources,
            "train_tokens": sum(s["train_tokens"] for s in sources.values()),
            "validation_tokens": sum(s["validation_tokens"] for s in sources.values()),
            "tokenizer_train_seconds": round(train_seconds, 3),
            "encode_tokens_per_s": round(encoded_tokens / encoded_seconds, 1) if encoded_seconds else None,
            "compression": report["sources"]}


def _summary(stats: dict) -> str:
    lines = ["tokenize stage summary", "", f"vocabulary {stats['vocab_size']:,} (EOS id {stats['eos_id']}), "
             f"{stats['train_tokens']:,} train and {stats['validation_tokens']:,} validation tokens", "",
             "per source (tokens, share of all tokens):"]
    for name, totals in stats["sources"].items():
        lines.append(f"  {name:20s} {totals['train_tokens'] + totals['validation_tokens']:>12,}  {totals['proportion']:.3f}")
    lines += ["", "compression on held-out text (bytes/token, tokens/word) by vocabulary size:"]
    for source, sizes in stats["compression"].items():
        cells = ", ".join(f"{size}: {c['bytes_per_token']} B/tok {c['tokens_per_word']} tok/word" for size, c in sizes.items())
        lines.append(f"  {source:20s} {cells}")
    if stats["encode_tokens_per_s"]:
        lines.append(f"\nencoding: {stats['encode_tokens_per_s']:,.0f} tokens/s")
    return "\n".join(lines) + "\n"


@skips_when_complete
def run(config: dict) -> None:
    """Entry point: `python -m specc.runtime <config.json>` with `"stage": "tokenize"`."""
    stage_dir = Path(config["run_dir"]) / "tokenize"
    try:
        check_upstream(Path(config["run_dir"]) / "data", "data")
        with storage_errors(stage_dir, "tokenize outputs under"):
            prepare_stage_dir(stage_dir, config)
            with MetricsWriter(stage_dir / "metrics.jsonl") as metrics:
                stats = run_stage(config, stage_dir, metrics)
    except (DataError, StageError) as error:
        raise SystemExit(f"specc tokenize: error: {error}") from None
    print(_summary(stats))
    mark_success(stage_dir, config, outputs=["tokenizer.json", "shards"], known=shard_digests(stage_dir / "shards"),
                 train_tokens=stats["train_tokens"], validation_tokens=stats["validation_tokens"])


def shard_digests(shards_dir: Path) -> dict[str, dict]:
    """The digests the shard writer streamed (relative to the stage dir), so the success
    marker does not read the shards back."""
    meta = json.loads((shards_dir / "meta.json").read_text())
    shards = [s for split in meta["splits"].values() for s in split]
    return {f"shards/{e['file']}": e for e in entries_of(shards, dtype_for_vocab(meta["vocab_size"]).itemsize)}
