"""The data stage's report counts drops per filter, per source and per language, dedup removals per
source, and warns when the mixture's achieved shares drift from the requested weights."""

from __future__ import annotations

import json

import pytest
from data_helpers import stage_config, write_jsonl

from specc.runtime.data import stage as data_stage
from specc.runtime.data.mixture import drift_warnings

ENGLISH = "The dog and the woman are not in the house, but she is also with the children in the garden, day {}."
FRENCH = "Le chien et la femme ne sont pas dans la maison, mais il est aussi avec les enfants du village, jour {}."
GERMAN = "Der Hund und die Katze sind nicht in dem Haus, aber sie ist auch mit der Frau im Garten, Tag {}."


@pytest.mark.slow  # the data stage end to end (with the packaged language identifier)
def test_drops_per_filter_source_and_language(tmp_path):
    web = [ENGLISH.format(i) for i in range(12)] + [FRENCH.format(i) for i in range(5)] + ["short"] * 2
    write_jsonl(tmp_path / "web.jsonl", [{"text": t} for t in web])
    write_jsonl(tmp_path / "forum.jsonl", [{"text": t} for t in [GERMAN.format(i) for i in range(3)]
                                           + [ENGLISH.format(100 + i) for i in range(4)] + [ENGLISH.format(10)]])
    params = {"corpus": {"sources": [{"type": "files", "name": "web", "path": "web.jsonl", "weight": 0.5},
                                     {"type": "files", "name": "forum", "path": "forum.jsonl", "weight": 0.5}]},
              "filters": [{"type": "length", "min_chars": 20}, {"type": "language", "languages": ["en"]},
                          {"type": "length", "name": "long", "min_chars": 100}],
              "dedup": {"exact": True}, "spec_dir": str(tmp_path)}
    run_dir = tmp_path / "run"
    data_stage.run(stage_config("data", run_dir, params))
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    web_filters = stats["sources"]["web"]["filters"]
    assert web_filters["length-1"] == {"documents_in": 19, "dropped": 2, "reasons": {"too_few_chars": 2}}
    assert web_filters["language-2"] == {"documents_in": 17, "dropped": 5, "reasons": {"language_fr": 5}}
    assert stats["sources"]["forum"]["filters"]["language-2"]["reasons"] == {"language_de": 3}
    languages = stats["languages"]
    assert languages["fr"] == {"documents_in": 5, "dropped": 5, "reasons": {"language_fr": 5}}
    assert languages["de"]["dropped"] == 3
    # days 0-9 make ENGLISH 99 characters long: dropped by `long`, counted under en
    assert languages["en"] == {"documents_in": 17, "dropped": 10, "reasons": {"too_few_chars": 10}}
    assert stats["dedup"]["by_source"] == {"forum": {"exact": 1, "near": 0}}  # web's day 10 again
    summary = (run_dir / "data" / "summary.txt").read_text()
    assert "languages identified" in summary and "language_fr 5" in summary
    assert summary.index("    length-1") < summary.index("    language-2") < summary.index("    long")  # spec order


def test_mixture_drift_warns_beyond_the_tolerance():
    report = {"target_tokens": None, "target_documents": None, "sources": {
        "code": {"requested_proportion": 0.5, "achieved_proportion": 0.647},
        "prose": {"requested_proportion": 0.5, "achieved_proportion": 0.353}}}
    warnings = drift_warnings(report, 0.05)
    assert [w.split(":")[0] for w in warnings] == ["source 'code'", "source 'prose'"]
    assert "+14.7 points" in warnings[0] and "set corpus.target_tokens" in warnings[0]
    assert report["sources"]["prose"]["drift"] == -0.147
    assert drift_warnings(report, 0.15) == []
