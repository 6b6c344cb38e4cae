"""Real dataset formats for pretraining sources: parquet files and directories, `datasets`
`save_to_disk` directories (Arrow IPC stream shards), jsonl with renamed fields, chat `messages`
as text; and the data stage keeps the same documents whichever format holds them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import stage_config, write_dataset_dict, write_jsonl, write_saved_dataset

from specc.runtime.data import stage as data_stage
from specc.runtime.data.documents import DataError, read_documents
from specc.runtime.data.formats import read_schema
from specc.runtime.data.sources import iter_source
from specc.spec.data import FileSource

TEXTS = [f"Document {i}: the harbor watches the quiet village near the old tower, day {i}." for i in range(30)]
CHAT = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
        for i in range(3)]


def _texts(tmp_path, **source) -> list[str]:
    return [d.text for d in iter_source(FileSource(name="web", **source), tmp_path)]


def write_all_formats(base) -> dict[str, str]:
    """The same 30 documents as jsonl (field `body`), parquet file, parquet directory (3 shards),
    save_to_disk directory (2 shards), and DatasetDict; source path per format."""
    write_jsonl(base / "j" / "a.jsonl", [{"body": t, "n": i} for i, t in enumerate(TEXTS)])
    pq.write_table(pa.table({"body": TEXTS}), base / "one.parquet")
    (base / "pq").mkdir()
    for k in range(3):
        pq.write_table(pa.table({"body": TEXTS[k * 10:(k + 1) * 10]}), base / "pq" / f"part-{k}.parquet")
    write_saved_dataset(base / "saved", {"body": TEXTS}, shards=2)
    write_dataset_dict(base / "dict", {"train": {"body": TEXTS}, "test": {"body": ["held out"]}})
    return {"jsonl": "j/*.jsonl", "parquet": "one.parquet", "parquet_dir": "pq", "arrow": "saved",
            "dataset_dict": "dict", "arrow_glob": "saved/*.arrow"}


def test_every_format_reads_the_same_documents(tmp_path):
    paths = write_all_formats(tmp_path)
    for kind, path in paths.items():
        assert _texts(tmp_path, path=path, text_field="body") == TEXTS, kind


def test_a_chat_messages_field_becomes_role_content_paragraphs(tmp_path):
    write_saved_dataset(tmp_path / "chat", {"messages": CHAT})
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CHAT])
    expected = [f"user: Question {i}?\n\nassistant: Answer {i}." for i in range(3)]
    assert _texts(tmp_path, path="chat", text_field="messages") == expected
    assert _texts(tmp_path, path="chat.jsonl", text_field="messages") == expected
    assert read_schema(tmp_path / "chat" / "data-00000-of-00001.arrow", "arrow", "x") == {"messages": "messages"}


def test_arrow_ipc_file_format_reads_too(tmp_path):
    table = pa.table({"text": TEXTS[:3]})
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert _texts(tmp_path, path="t.arrow") == TEXTS[:3]


def _damaged_state(directory, state: dict) -> None:
    """A save_to_disk directory whose state.json was damaged or hand-written."""
    directory.mkdir()
    (directory / "state.json").write_text(json.dumps(state))
    (directory / "dataset_info.json").write_text("{}")


@pytest.mark.parametrize(("setup", "path", "message"), [
    (lambda d: write_saved_dataset(d / "s", {"content": ["a"]}), "s", r"no column 'text' \(columns: content\)"),
    (lambda d: pq.write_table(pa.table({"text": [1, 2]}), d / "n.parquet"), "n.parquet",
     "column 'text' is int64, not a string"),
    (lambda d: (d / "bad.arrow").write_bytes(b"ARROW1 but not really"), "bad.arrow", "bad.arrow: not an Arrow IPC"),
    (lambda d: (d / "empty").mkdir(), "empty", "directory 'empty' holds no jsonl, parquet or .arrow files"),
    (lambda d: write_dataset_dict(d / "dd", {"test": {"text": ["a"]}}), "dd", "splits test and no `train`"),
    (lambda d: _damaged_state(d / "s", {"_data_files": 5}), "s", "`_data_files` is 5, not a list"),
    (lambda d: _damaged_state(d / "s", {"_data_files": [{"filename": "../../secret.jsonl"}]}), "s",
     "names '../../secret.jsonl', not a file name in the dataset's directory"),
    (lambda d: _damaged_state(d / "s", {"_data_files": [{"filename": 7}]}), "s", "names 7, not a file name"),
    (lambda d: (d / "dd").mkdir() or (d / "dd" / "dataset_dict.json").write_text('{"splits": 5}'), "dd",
     "`splits` is 5, not a list of split names"),
    (lambda d: (d / "c.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(40))), "c.jsonl.zst", "cannot read"),
])
def test_bad_inputs_give_located_messages(tmp_path, setup, path, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        _texts(tmp_path, path=path)


@pytest.mark.slow  # the data stage end to end, once per format
def test_data_stage_keeps_the_same_documents_from_every_format(tmp_path):
    paths = write_all_formats(tmp_path)
    outputs = {}
    for kind in ("jsonl", "parquet", "arrow"):
        params = {"corpus": {"sources": [{"type": "files", "name": "web", "path": paths[kind], "text_field": "body"}]},
                  "filters": [{"type": "length", "min_chars": 10}], "dedup": {"exact": True},
                  "spec_dir": str(tmp_path)}
        run_dir = tmp_path / f"run-{kind}"
        data_stage.run(stage_config("data", run_dir, params))
        files = json.loads((run_dir / "data" / "manifest.json").read_text())["files"]
        outputs[kind] = [d.text for f in files for d in read_documents(run_dir / "data" / f["file"])]
    assert outputs["jsonl"] == outputs["parquet"] == outputs["arrow"] == TEXTS


def test_progress_totals_count_parquet_rows_from_the_footers(tmp_path):
    from specc.runtime.data.totals import source_totals

    paths = write_all_formats(tmp_path)
    sources = [FileSource(name=kind, path=path, text_field="body") for kind, path in paths.items()]
    totals = source_totals(sources, tmp_path)
    assert totals["parquet_dir"] == {"documents": 30, "bytes": None}
    assert totals["arrow"] == {"documents": None, "bytes": None}  # an Arrow stream does not say
    assert totals["jsonl"]["documents"] is None and totals["jsonl"]["bytes"] > 0
