"""Opening the HTML reports as a person would: headless Chromium (Debian package `chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

WIDTH = 1280
MATPLOTLIB_BLUE = (0x1F, 0x77, 0xB4)
"""The first colour of matplotlib's default cycle: the first series of every chart."""


def chromium() -> str:
    """The browser, or skip: CI installs it (scripts/setup-chromium.sh, run by scripts/test.sh)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (`apt-get install -y chromium`; scripts/test.sh does it in CI)")


def _run(arguments: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions",
             "--no-first-run", "--allow-file-access-from-files"]
    return subprocess.run([chromium(), *flags, *arguments], capture_output=True, text=True, timeout=timeout)


def dump_dom(page: Path) -> str:
    """The page's DOM as Chromium built it."""
    result = _run(["--dump-dom", page.resolve().as_uri()])
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def screenshot(page: Path, out: Path, height: int) -> Path:
    result = _run([f"--window-size={WIDTH},{height}", f"--screenshot={out}", page.resolve().as_uri()])
    assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]
    return out


def colour_share(png: Path, colour: tuple[int, int, int], tolerance: int = 12) -> float:
    """Share of the screenshot's pixels within `tolerance` of `colour` (a drawn series)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    near = (np.abs(pixels - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=-1)
    return float(near.mean())


def table_rows(dom: str, table_id: str) -> list[list[str]]:
    """The body rows of `<table id=table_id>` as cell texts."""
    match = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert match, f"no table {table_id!r} in the page"
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(1), re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in rows]


def chart_count(dom: str) -> int:
    """Figures whose SVG draws something (matplotlib paths with coordinates)."""
    figures = re.findall(r'<figure class="chart">(.*?)</figure>', dom, re.S)
    return sum(1 for figure in figures if "<svg" in figure and re.search(r'<path [^>]*d="M', figure))
