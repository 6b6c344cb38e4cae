"""Every `formulas.md section N` the code cites is a section of docs/formulas.md, under that path."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "formulas.md"
REFERENCE = re.compile(r"(\S*)formulas\.md\s+section\s+(\d+)(?:\s+'([^']+)')?")


def _sections() -> dict[str, str]:
    """{number: text} of the `## N. Title` sections."""
    parts = re.split(r"^## (\d+)\. ", DOC.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def _references() -> list[tuple[str, str, str, str]]:
    found = []
    for folder in ("specc", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for match in REFERENCE.finditer(path.read_text()):
                found.append((str(path.relative_to(ROOT)), *match.groups()))
    return found


def test_the_code_cites_the_formulas():
    assert len(_references()) >= 10


def test_every_cited_section_exists():
    sections = _sections()
    for where, prefix, number, name in _references():
        assert prefix.endswith("docs/"), f"{where}: cite docs/formulas.md, not {prefix}formulas.md"
        assert number in sections, f"{where}: docs/formulas.md has no section {number}"
        if name:
            assert name in sections[number], f"{where}: docs/formulas.md section {number} has no '{name}'"
