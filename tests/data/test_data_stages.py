"""The data and tokenize stages end to end from stage configs: outputs, shards, resume, errors."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import stage_config, write_jsonl

from specc.runtime.data import stage as data_stage
from specc.runtime.data.documents import read_documents
from specc.runtime.shards import open_split
from specc.runtime.tokenizer import stage as tokenize_stage
from specc.runtime.tokenizer.bpe import decode, load_tokenizer
from specc.runtime.tokenizer.stage import is_validation

ROOT = Path(__file__).resolve().parents[2]


def make_data_config(spec_dir: Path, num_workers: int = 1, part_documents: int = 150, prose: int = 600) -> dict:
    return {
        "corpus": {"sources": [
            {"type": "synthetic", "name": "prose", "num_documents": prose, "seed": 4, "weight": 0.6},
            {"type": "python_stdlib", "name": "stdlib", "max_files": 15, "weight": 0.2},
            {"type": "files", "name": "web", "path": "web/*.jsonl", "weight": 0.2},
        ], "validation_fraction": 0.1, "seed": 2},
        "filters": [{"type": "length", "min_chars": 100, "max_chars": 200_000},
                    {"type": "symbols", "sources": ["prose"]}, {"type": "repetition", "sources": ["prose"]},
                    {"type": "rules", "block_domains": ["spam.example"], "sources": ["web"]}],
        "dedup": {"exact": True, "minhash": {"threshold": 0.8}, "num_workers": num_workers},
        "spec_dir": str(spec_dir), "part_documents": part_documents,
    }


def make_tokenize_config(vocab_size: int = 512) -> dict:
    return {"tokenizer": {"vocab_size": vocab_size, "sample_documents": 400, "compare_vocab_sizes": [300]},
            "corpus": {"sources": [{"type": "synthetic", "name": "prose"}], "validation_fraction": 0.1, "seed": 2},
            "model_vocab_size": 512}


def make_web(spec_dir: Path) -> None:
    records = [{"text": f"Article {i}. " + "The harbor watches the quiet village near the old tower. " * 4,
                "url": f"https://{'spam.example' if i % 5 == 0 else 'news.example'}/{i}"} for i in range(40)]
    records.append({"text": "Rare unicode: Grüße, 東京, emoji 🙂 and a literal <|endoftext|> marker. " * 3,
                    "url": "https://news.example/u"})
    write_jsonl(spec_dir / "web" / "a.jsonl", records)


def output_documents(run_dir: Path) -> list:
    data_dir = run_dir / "data"
    files = json.loads((data_dir / "manifest.json").read_text())["files"]
    return [d for entry in files for d in read_documents(data_dir / entry["file"])]


def output_bytes(run_dir: Path) -> dict[str, bytes]:
    data_dir = run_dir / "data"
    paths = sorted((data_dir / "output").glob("*.jsonl.gz")) + [data_dir / "dedup" / "removed.jsonl.gz"]
    return {p.name: gzip.decompress(p.read_bytes()) for p in paths}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Both stages run once on a small corpus with two worker processes."""
    base = tmp_path_factory.mktemp("pipeline")
    make_web(base)
    run_dir = base / "run"
    data_config = stage_config("data", run_dir, make_data_config(base, num_workers=2))
    data_stage.run(data_config)
    tokenize_config = stage_config("tokenize", run_dir, make_tokenize_config())
    tokenize_stage.run(tokenize_config)
    return base, run_dir, data_config, tokenize_config


@pytest.mark.slow  # the data and tokenize stages end to end
def test_data_stage_outputs_and_report(pipeline):
    _, run_dir, _, _ = pipeline
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    documents = output_documents(run_dir)
    assert stats["output"]["documents"] == len(documents)
    filters = {f["name"]: f for f in stats["filters"]}
    assert filters["rules-4"]["reasons"] == {"blocked_domain": 8}
    assert filters["length-1"]["documents_in"] == sum(s["documents_in"] for s in stats["sources"].values())
    assert stats["dedup"]["exact_removed"] > 0 and stats["dedup"]["near_removed"] > 0
    assert stats["dedup"]["lsh"]["bucket_tasks"] == 1  # the sharded dedup (no in-memory index to count any more)
    surviving_junk = {d.meta["junk_type"] for d in documents if d.meta.get("kind") == "junk"}
    assert not surviving_junk & {"symbol_soup", "repeated_lines", "boilerplate"}  # no language filter here
    assert not any("spam.example" in d.meta.get("url", "") for d in documents)
    assert (run_dir / "data" / "_SUCCESS.json").exists() and (run_dir / "data" / "summary.txt").exists()
    assert set(stats["mixture"]["sources"]) == {"prose", "stdlib", "web"}


@pytest.mark.slow  # the data and tokenize stages end to end
def test_worker_count_does_not_change_the_result(pipeline, tmp_path):
    base, run_dir, _, _ = pipeline
    serial = tmp_path / "serial"
    data_stage.run(stage_config("data", serial, make_data_config(base, num_workers=1)))
    assert output_bytes(serial) == output_bytes(run_dir)


@pytest.mark.slow  # the data and tokenize stages end to end
def test_shards_decode_back_to_the_kept_documents(pipeline):
    _, run_dir, _, _ = pipeline
    tokenizer = load_tokenizer(run_dir / "tokenize" / "tokenizer.json", ["<|endoftext|>"])
    shards = run_dir / "tokenize" / "shards"
    meta = json.loads((shards / "meta.json").read_text())
    documents = output_documents(run_dir)
    expected = {"train": [], "validation": []}
    for d in documents:
        expected["validation" if is_validation(d.source, d.id, 2, 0.1) else "train"].append(d.text)
    assert expected["validation"] and expected["train"]
    for split in ("train", "validation"):
        decoded = []
        for shard in meta["splits"][split]:
            tokens = np.fromfile(shards / shard["file"], dtype=meta["dtype"])
            starts = np.load(shards / shard["file"].replace(".bin", ".idx.npy"))
            ends = list(starts[1:]) + [len(tokens)]
            for start, end in zip(starts, ends):
                assert tokens[end - 1] == meta["eos_id"]
                decoded.append(decode(tokenizer, tokens[start:end - 1].tolist()))
                # a literal "<|endoftext|>" is the one special token, as every other reader sees it
                assert list(tokens[start:end - 1]).count(meta["eos_id"]) == decoded[-1].count("<|endoftext|>")
        assert decoded == expected[split]
        assert open_split(shards, split).num_tokens == sum(s["num_tokens"] for s in meta["splits"][split])


@pytest.mark.slow  # the data and tokenize stages end to end
def test_tokenizer_round_trips_and_reports_compression(pipeline):
    _, run_dir, _, _ = pipeline
    tokenizer = load_tokenizer(run_dir / "tokenize" / "tokenizer.json", ["<|endoftext|>", "<|pad|>"])
    assert tokenizer.get_vocab_size() == 512
    for text in ["  leading spaces\tand tabs\n\n", "Grüße 東京 🙂 \x00 \u200b", "<|pad|><|endoftext|>", ""]:
        assert decode(tokenizer, tokenizer.encode(text, add_special_tokens=False).ids) == text
    report = json.loads((run_dir / "tokenize" / "compression.json").read_text())
    prose = report["sources"]["prose"]
    assert set(prose) == {"300", "512"}
    assert prose["512"]["bytes_per_token"] > prose["300"]["bytes_per_token"] > 1.0


@pytest.mark.slow  # the data and tokenize stages end to end
def test_completed_stages_are_skipped(pipeline):
    _, run_dir, data_config, tokenize_config = pipeline
    before = (run_dir / "data" / "stats.json").stat().st_mtime_ns
    data_stage.run(data_config)
    tokenize_stage.run(tokenize_config)
    assert (run_dir / "data" / "stats.json").stat().st_mtime_ns == before


def _spawn(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "specc.runtime", str(config_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the stage finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow  # the data and tokenize stages end to end
def test_killed_stages_resume_to_the_same_result(pipeline, tmp_path):
    base, run_dir, _, _ = pipeline
    killed = tmp_path / "killed"
    data_path, tokenize_path = tmp_path / "data.json", tmp_path / "tokenize.json"
    stage_config("data", killed, make_data_config(base, num_workers=2), data_path)
    stage_config("tokenize", killed, make_tokenize_config(), tokenize_path)

    process = _spawn(data_path)
    _kill_when(process, lambda: len(list((killed / "data" / "parts").glob("*/*.json"))) >= 2)
    assert not (killed / "data" / "_SUCCESS.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "specc.runtime", str(data_path)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    assert "resumed: skipped" in resumed.stderr
    assert output_bytes(killed) == output_bytes(run_dir)

    process = _spawn(tokenize_path)
    tokenizer_file = killed / "tokenize" / "tokenizer.json"
    _kill_when(process, tokenizer_file.exists, timeout=300)  # killed while baselines train or parts encode
    assert not (killed / "tokenize" / "_SUCCESS.json").exists()
    trained = tokenizer_file.stat().st_mtime_ns
    subprocess.run([sys.executable, "-m", "specc.runtime", str(tokenize_path)], cwd=ROOT, check=True,
                   capture_output=True)
    assert tokenizer_file.stat().st_mtime_ns == trained  # reused, not retrained
    assert_same_shards(killed, run_dir)

    # a part killed half-written (shard file but no marker) is redone; finished parts are skipped
    parts = sorted((killed / "tokenize" / "shards" / "parts").iterdir())
    (parts[-1] / "part.json").unlink()
    (parts[-1] / "train-00000.bin").write_bytes(b"\x00\x01")
    (killed / "tokenize" / "_SUCCESS.json").unlink()
    subprocess.run([sys.executable, "-m", "specc.runtime", str(tokenize_path)], cwd=ROOT, check=True,
                   capture_output=True)
    skipped = [json.loads(line) for line in (killed / "tokenize" / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for m in skipped[-len(parts):] if m.get("skipped")) == len(parts) - 1
    assert_same_shards(killed, run_dir)


def assert_same_shards(run_a: Path, run_b: Path) -> None:
    shards_a, shards_b = run_a / "tokenize" / "shards", run_b / "tokenize" / "shards"
    assert (shards_a / "meta.json").read_text() == (shards_b / "meta.json").read_text()
    files = sorted(p.relative_to(shards_b) for p in shards_b.rglob("*") if p.suffix in (".bin", ".npy"))
    assert files
    for name in files:
        assert (shards_a / name).read_bytes() == (shards_b / name).read_bytes()


def test_bad_input_gives_a_message_not_a_traceback(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    params = make_data_config(tmp_path)
    params["corpus"]["sources"] = [params["corpus"]["sources"][2]]
    config_path = tmp_path / "data.json"
    stage_config("data", tmp_path / "run", params, config_path)
    result = subprocess.run([sys.executable, "-m", "specc.runtime", str(config_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "specc data: error: web/bad.jsonl:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    missing = subprocess.run([sys.executable, "-m", "specc.runtime", str(config_path).replace("data.json", "t.json")],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1


def test_tokenize_without_data_stage_and_oversized_vocab(tmp_path):
    with pytest.raises(SystemExit, match="manifest.json is missing: run the data stage first"):
        tokenize_stage.run(stage_config("tokenize", tmp_path, make_tokenize_config()))
    params = make_tokenize_config(vocab_size=1024)
    with pytest.raises(SystemExit, match=r"tokenizer.vocab_size \(1024\) exceeds model.vocab_size \(512\)"):
        tokenize_stage.run(stage_config("tokenize", tmp_path / "b", params))


@pytest.mark.slow  # the data and tokenize stages end to end
def test_tiny_spec_runs_through_both_stages(tmp_path):
    """specs/tiny.yaml's own sections, through the params builders the bundle uses, on a reduced corpus."""
    from specc.diagnostics.check import check_file
    from specc.emit.configs.data import build_data_config
    from specc.emit.configs.data import build_tokenize_config

    spec = check_file(ROOT / "specs" / "tiny.yaml").spec
    sources = [source.model_copy(update={"max_files": 20} if source.type == "python_stdlib" else {"num_documents": 300})
               for source in spec.corpus.sources]
    spec = spec.model_copy(update={"corpus": spec.corpus.model_copy(update={"sources": sources})})
    data_config = stage_config("data", tmp_path, build_data_config(spec, ROOT / "specs"))
    json.dumps(data_config)  # a config.json must be plain JSON
    data_stage.run(data_config)
    tokenize_stage.run(stage_config("tokenize", tmp_path, build_tokenize_config(spec, ROOT / "specs")))
    meta = json.loads((tmp_path / "tokenize" / "shards" / "meta.json").read_text())
    assert meta["vocab_size"] <= spec.model.vocab_size and meta["eos_id"] == 0
    assert meta["splits"]["train"] and meta["splits"]["validation"]
    assert (tmp_path / "data" / "_SUCCESS.json").exists() and (tmp_path / "tokenize" / "_SUCCESS.json").exists()


@pytest.mark.slow  # the data and tokenize stages end to end
def test_tokenizer_training_is_deterministic_and_a_given_tokenizer_is_used(pipeline, tmp_path):
    from specc.runtime.tokenizer.bpe import train_bpe

    texts = [d.text for d in output_documents(pipeline[1])][:200]
    first = train_bpe(texts, 400, ["<|endoftext|>"], 2).to_str()
    assert train_bpe(texts, 400, ["<|endoftext|>"], 2).to_str() == first

    _, run_dir, _, _ = pipeline
    given = tmp_path / "run"
    shutil.copytree(run_dir / "data", given / "data")
    params = make_tokenize_config()
    params["tokenizer"]["path"] = str(run_dir / "tokenize" / "tokenizer.json")
    tokenize_stage.run(stage_config("tokenize", given, params))
    assert (given / "tokenize" / "tokenizer.json").read_text() == (run_dir / "tokenize" / "tokenizer.json").read_text()
    assert (given / "tokenize" / "shards" / "meta.json").read_text() == \
        (run_dir / "tokenize" / "shards" / "meta.json").read_text()


@pytest.mark.slow  # the data and tokenize stages end to end
def test_slurm_array_tasks_then_merge_give_the_single_job_result(pipeline, tmp_path, monkeypatch):
    """`cluster.slurm.data_array_tasks`: each array task filters and signs every n-th part; the
    job after the array finds all parts done, deduplicates and mixes: same output as one job."""
    base, run_dir, _, _ = pipeline
    arrayed = tmp_path / "arrayed"
    config = stage_config("data", arrayed, {**make_data_config(base, num_workers=1), "array_tasks": 3, "bucket_tasks": 2})
    for task in range(3):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        data_stage.run(config)
        assert not (arrayed / "data" / "_SUCCESS.json").exists()
    sharded = arrayed / "data" / "dedup" / "sharded"
    assert len(list((sharded / "bands-done").iterdir())) == len(list((arrayed / "data" / "parts").rglob("*.json")))
    monkeypatch.setenv("SPECC_DATA_PHASE", "buckets")  # the bucket array the launcher submits after the first
    for task in range(2):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        data_stage.run(config)
    assert sorted(p.name for p in (sharded / "pairs").iterdir()) == ["t0000.npz", "t0001.npz"]
    monkeypatch.delenv("SPECC_DATA_PHASE")
    parts = sorted((arrayed / "data" / "parts").rglob("*.json"))
    assert len(parts) >= 3  # every part was done by some task
    done_by_task = []
    for task in range(3):
        records = [json.loads(line) for line in (arrayed / "data" / f"metrics.task-{task}.jsonl").read_text().splitlines()]
        done_by_task += [r["parts_done"] for r in records if r.get("event") == "filter_phase"]
    assert len(done_by_task) == 3 and min(done_by_task) >= 1 and sum(done_by_task) == len(parts)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    data_stage.run(config)
    assert (arrayed / "data" / "_SUCCESS.json").exists()
    merge_metrics = (arrayed / "data" / "metrics.jsonl").read_text()
    assert '"parts_done": 0' in merge_metrics  # the merge job filtered nothing itself
    assert '"bucket_tasks_done": 0' in merge_metrics  # nor paired any bucket: the bucket array did
    assert output_bytes(arrayed) == output_bytes(run_dir)


@pytest.mark.slow  # the data stage end to end
def test_bucket_task_count_does_not_change_the_output(pipeline, tmp_path, monkeypatch):
    """More bucket tasks (key ranges) than workers, run in the pool: the same bytes out."""
    base, run_dir, _, _ = pipeline
    monkeypatch.setattr(data_stage, "POOL_MIN_DOCUMENTS", 0)  # the pool, as for a large corpus
    config = stage_config("data", tmp_path / "run", {**make_data_config(base, num_workers=2), "bucket_tasks": 3})
    data_stage.run(config)
    pairs = sorted(p.name for p in (tmp_path / "run" / "data" / "dedup" / "sharded" / "pairs").iterdir())
    assert pairs == ["t0000.npz", "t0001.npz", "t0002.npz"]
    assert output_bytes(tmp_path / "run") == output_bytes(run_dir)
