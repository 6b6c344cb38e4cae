"""`specc plan --html`: the plan drawn, opened in headless Chromium and looked at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser import MATPLOTLIB_BLUE, chart_count, colour_share, dump_dom, screenshot, table_rows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # starts Chromium (several seconds)


def test_plan_report_renders_memory_time_and_candidates(tmp_path):
    page, plan_file = tmp_path / "plan.html", tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "specc.cli", "plan", str(ROOT / "specs" / "llama3-8b-h100x8.yaml"),
                             "--search", "--top", "3", "--html", str(page), "-o", str(plan_file)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    plan = json.loads(plan_file.read_text())
    dom = dump_dom(page)
    assert "<title>specc plan: llama3-8b-h100x8</title>" in dom
    for heading in ("Memory per device", "Step time", "Layouts compared"):
        assert f"<h2>{heading}</h2>" in dom
    assert chart_count(dom) >= 5  # memory breakdown, per stage, time breakdown, candidates' time and memory
    candidates = table_rows(dom, "candidates-table")
    assert len(candidates) == len(plan["candidates"]) == 3
    assert candidates[0][2] == f"{plan['candidates'][0]['time']['step_s']:.4g}"
    memory = dict((row[0], row[1]) for row in table_rows(dom, "memory-table"))
    assert memory["total per device"] == f"{plan['memory']['per_device_gib']:.4g}"
    shot = screenshot(page, tmp_path / "plan.png", 2600)
    assert colour_share(shot, MATPLOTLIB_BLUE) > 0.005  # bars were drawn, not an empty frame
