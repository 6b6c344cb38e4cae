"""Source readers: formats, ids, deterministic order, and clear errors for bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from data_helpers import synthetic_documents, synthetic_source, write_jsonl

from specc.runtime.data.documents import DataError
from specc.runtime.data.sources import iter_python_stdlib, iter_source
from specc.spec.data import FileSource, PythonStdlibSource

RECORDS = [{"text": f"document number {i}", "url": f"https://example.com/{i}", "uid": f"u{i}", "nested": {"x": 1}}
           for i in range(5)]


def _read(tmp_path: Path, **source) -> list:
    return list(iter_source(FileSource(name="web", **source), tmp_path))


def test_jsonl_plain_gz_and_zst_read_alike(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", RECORDS)
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as stream:
        stream.writelines(json.dumps(r) + "\n" for r in RECORDS)
    payload = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        documents = _read(tmp_path, path=name)
        assert [d.text for d in documents] == [r["text"] for r in RECORDS]
        assert documents[2].id == f"{name}:3"
        assert documents[2].meta == {"url": "https://example.com/2", "uid": "u2"}  # scalars only


def test_id_field_and_text_field(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"body": "hello there", "uid": 7}])
    [document] = _read(tmp_path, path="d.jsonl", text_field="body", id_field="uid")
    assert (document.source, document.id, document.text) == ("web", "7", "hello there")


def test_parquet_and_text_globs(tmp_path):
    pq.write_table(pa.table({"text": ["alpha beta", "gamma delta"], "url": ["u1", "u2"]}), tmp_path / "t.parquet")
    documents = _read(tmp_path, path="*.parquet")
    assert [d.text for d in documents] == ["alpha beta", "gamma delta"]
    assert documents[1].id == "t.parquet:1" and documents[1].meta["url"] == "u2"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "b.py").write_text("print('b')\n")
    (tmp_path / "code" / "a.py").write_text("print('a')\n")
    documents = _read(tmp_path, path="code/**/*.py")
    assert [d.id for d in documents] == ["code/a.py", "code/b.py"]  # sorted: deterministic


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "ok"}\n{"text": broken}\n', "bad.jsonl:2: not valid JSON"),
    ('{"body": "no text field"}\n', "bad.jsonl:1: no text field 'text' (fields: body)"),
    ('{"text": 42}\n', "bad.jsonl:1: field 'text' is int, not a string"),
    ('[1, 2]\n', "bad.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_gives_located_messages(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _read(tmp_path, path="bad.jsonl")


def test_no_matching_files_and_bad_parquet(tmp_path):
    with pytest.raises(DataError, match="no files match 'missing/\\*.jsonl'"):
        _read(tmp_path, path="missing/*.jsonl")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="x.parquet: not a readable parquet file"):
        _read(tmp_path, path="x.parquet")
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "y.parquet")
    with pytest.raises(DataError, match="no column 'text' \\(columns: body\\)"):
        _read(tmp_path, path="y.parquet")


def test_python_stdlib_is_deterministic_and_bounded():
    first = list(iter_python_stdlib(PythonStdlibSource(type="python_stdlib", name="stdlib", max_files=30)))
    again = list(iter_python_stdlib(PythonStdlibSource(type="python_stdlib", name="stdlib", max_files=30)))
    assert 0 < len(first) <= 30
    assert [(d.id, d.text) for d in first] == [(d.id, d.text) for d in again]
    assert [d.id for d in first] == sorted(d.id for d in first)
    assert all(d.id.endswith(".py") and "site-packages" not in d.id for d in first)


def test_synthetic_source_plants_what_it_promises():
    documents = synthetic_documents(num_documents=1000, duplicate_fraction=0.2, junk_fraction=0.1)
    kinds = [d.meta["kind"] for d in documents]
    assert kinds.count("junk") == 100
    assert kinds.count("exact_dup") + kinds.count("near_dup") == 200
    assert len({d.id for d in documents}) == 1000
    by_id = {d.id: d for d in documents}
    for document in documents:
        if document.meta["kind"] == "exact_dup":
            assert document.text == by_id[document.meta["original"]].text
        if document.meta["kind"] == "near_dup":
            assert 0.05 <= document.meta["edit_fraction"] <= 0.20
            assert document.text != by_id[document.meta["original"]].text
            assert int(document.id.rsplit("-", 1)[1]) > int(document.meta["original"].rsplit("-", 1)[1])
    assert [d.text for d in synthetic_documents(num_documents=50, seed=3)] == \
        [d.text for d in iter_source(synthetic_source(num_documents=50, seed=3), Path("."))]
