"""The run report's data section as a person sees it in headless Chromium: drops per source and per
language, mixture requested vs achieved with the drift warning, from a data stage run with a
language filter on two sources whose sizes pull the mixture off its weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from browser import dump_dom, table_rows

from specc.report.html import page
from specc.report.run import data_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_helpers import stage_config, write_jsonl  # noqa: E402

ENGLISH = "The dog and the woman are not in the house, but she is also with the children in the garden, day {}."
FRENCH = "Le chien et la femme ne sont pas dans la maison, mais il est aussi avec les enfants du village, jour {}."


@pytest.mark.slow  # the data stage end to end, then Chromium
def test_data_section_shows_drops_per_source_and_language_and_the_mixture_drift(tmp_path):
    from specc.runtime.data import stage as data_stage

    write_jsonl(tmp_path / "web.jsonl", [{"text": ENGLISH.format(i)} for i in range(12)]
                + [{"text": FRENCH.format(i)} for i in range(4)])
    write_jsonl(tmp_path / "forum.jsonl", [{"text": ENGLISH.format(100 + i)} for i in range(3)])
    params = {"corpus": {"sources": [{"type": "files", "name": "web", "path": "web.jsonl", "weight": 0.5},
                                     {"type": "files", "name": "forum", "path": "forum.jsonl", "weight": 0.5}]},
              "filters": [{"type": "language", "languages": ["en"]}], "dedup": {"exact": True},
              "spec_dir": str(tmp_path)}
    data_stage.run(stage_config("data", tmp_path / "run", params))
    stats = json.loads((tmp_path / "run" / "data" / "stats.json").read_text())
    report = {"stages": [{"name": "data", "outputs": tmp_path / "run" / "data"}]}
    html = tmp_path / "report.html"
    html.write_text(page("data", "", [data_section(report)]))
    dom = dump_dom(html)

    mixture = {row[0]: row for row in table_rows(dom, "mixture-table")}
    achieved = stats["mixture"]["sources"]["web"]["achieved_proportion"]
    assert mixture["web"][1:4] == ["50.0%", f"{achieved:.1%}", f"{(achieved - 0.5) * 100:+.1f}"]
    assert achieved > 0.75  # 12 English documents against 3
    assert dom.count('<p class="bad">warning: source ') == 2
    by_source = table_rows(dom, "data-sources-table")
    assert ["web", "language-1", "16", "4", "language_fr 4"] in by_source
    assert ["forum", "language-1", "3", "0", ""] in by_source
    languages = {row[0]: row[1:] for row in table_rows(dom, "data-languages-table")}
    assert languages == {"en": ["15", "0", ""], "fr": ["4", "4", "language_fr 4"]}
