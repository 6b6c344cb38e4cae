"""Plots as inline SVG text, drawn with matplotlib's Agg-free SVG backend (no display needed).

Every function returns an `<svg ...>` element (no XML prolog), ready to sit in HTML, or None
when there is nothing to draw. SVGs are made reproducible (fixed hash salt, no date).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

matplotlib.rcParams.update({"svg.hashsalt": "specc", "figure.dpi": 100, "font.size": 9,
                            "axes.spines.top": False, "axes.spines.right": False,
                            "axes.grid": True, "grid.alpha": 0.3})

Series = tuple[str, Sequence[float], Sequence[float]]
"""(label, x values, y values)."""


def to_svg(figure) -> str:
    """The figure as an `<svg>` element; the figure is closed."""
    buffer = io.StringIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    # the RDF metadata block only names matplotlib; without it the page mentions no other site
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


def lines(title: str, xlabel: str, ylabel: str, series: list[Series], log_y: bool = False,
          size: tuple[float, float] = (5.0, 3.0)) -> str | None:
    """One line per series (markers when a series has few points)."""
    series = [s for s in series if len(s[1])]
    if not series:
        return None
    figure, axes = plt.subplots(figsize=size)
    for label, x, y in series:
        axes.plot(x, y, label=label, marker="o" if len(x) <= 12 else None, markersize=3)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if log_y:
        axes.set_yscale("log")
    if len(series) > 1:
        axes.legend(fontsize=8)
    return to_svg(figure)


def grouped_bars(title: str, ylabel: str, categories: list[str], groups: dict[str, list[float | None]],
                 size: tuple[float, float] = (5.0, 3.0), note: str | None = None, log_y: bool = False) -> str | None:
    """Bars per category, one colour per group (e.g. predicted vs measured); None values are gaps."""
    if not categories or not groups:
        return None
    figure, axes = plt.subplots(figsize=size)
    width = 0.8 / len(groups)
    for index, (label, values) in enumerate(groups.items()):
        positions = [c + (index - (len(groups) - 1) / 2) * width for c in range(len(categories))]
        shown = [(p, v) for p, v in zip(positions, values) if v is not None]
        if shown:
            bars = axes.bar([p for p, _ in shown], [v for _, v in shown], width, label=label)
            axes.bar_label(bars, fmt="%.3g", fontsize=7)
    axes.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
    axes.set(title=title, ylabel=ylabel + (" (log scale)" if log_y else ""))
    if log_y:
        axes.set_yscale("log")
    axes.legend(fontsize=8)
    if note:
        axes.annotate(note, (0, 0), (0, -32), xycoords="axes fraction", textcoords="offset points", fontsize=7)
    return to_svg(figure)


def horizontal_bars(title: str, xlabel: str, labels: list[str], values: list[float],
                    annotations: list[str] | None = None, limit: float | None = None,
                    limit_label: str | None = None, size: tuple[float, float] | None = None) -> str | None:
    """A horizontal bar per label, top to bottom; an optional vertical limit line (capacity)."""
    if not labels:
        return None
    width = 6.0 if max(len(label) for label in labels) <= 20 else 8.5
    figure, axes = plt.subplots(figsize=size or (width, 0.45 * len(labels) + 1.2))
    positions = list(range(len(labels)))[::-1]
    bars = axes.barh(positions, values, color="#4c72b0")
    axes.set_yticks(positions, labels)
    axes.bar_label(bars, labels=annotations or [f"{v:,.4g}" for v in values], fontsize=7, padding=2)
    if limit is not None:
        axes.axvline(limit, color="#c44e52", linestyle="--", label=limit_label)
        axes.legend(fontsize=8, loc="lower right")
    axes.set(title=title, xlabel=xlabel)
    axes.margins(x=0.2)
    return to_svg(figure)


def stacked_bar(title: str, xlabel: str, parts: dict[str, float], limit: float | None = None,
                limit_label: str | None = None) -> str | None:
    """One horizontal bar split into its parts (a memory or time breakdown), with a limit line."""
    parts = {k: v for k, v in parts.items() if v > 0}
    if not parts:
        return None
    figure, axes = plt.subplots(figsize=(6.5, 2.2))
    left = 0.0
    for name, value in parts.items():
        axes.barh([0], [value], left=left, label=f"{name} {value:.3g}")
        left += value
    if limit is not None:
        axes.axvline(limit, color="#c44e52", linestyle="--", label=limit_label)
    axes.set_yticks([])
    axes.set(title=title, xlabel=xlabel)
    axes.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    return to_svg(figure)
