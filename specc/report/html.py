"""The page around the charts: inline CSS, sections, tables. No script, nothing fetched."""

from __future__ import annotations

import html
from collections.abc import Iterable

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 16px 28px 48px; color: #1d2330; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #dde;
       padding-bottom: 4px; } h3 { font-size: 15px; margin: 14px 0 6px; }
.meta { color: #556; margin: 0 0 12px; } .note { color: #556; font-size: 12.5px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure.chart { margin: 0; border: 1px solid #e3e6ee; border-radius: 6px; padding: 4px; background: #fff; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde1ea; padding: 3px 9px; text-align: left; }
td.num { text-align: right; } th { background: #f3f5fa; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #c62828; font-weight: 600; } .other { color: #8a6d00; }
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def number(value: object, digits: int = 4) -> str:
    """A table cell's text: numbers to `digits` significant figures with thousands separators."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e3 else f"{value:,.0f}"
    return str(value)


def table(headers: list[str], rows: Iterable[list[object]], table_id: str | None = None) -> str:
    """An HTML table; numeric cells right-aligned. Cells that are already markup come as `Markup`."""
    identifier = f' id="{escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, Markup):
                cells.append(f"<td>{cell}</td>")
            elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{escape(number(cell))}</td>')
            else:
                cells.append(f"<td>{escape('' if cell is None else cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{identifier}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Markup(str):
    """Text that is already HTML (not escaped again)."""


def figures(*svgs: str | None, captions: list[str] | None = None) -> str:
    """A row of figures (charts that could not be drawn are left out)."""
    figures = []
    for index, svg in enumerate(svgs):
        if svg is None:
            continue
        caption = f"<figcaption class=\"note\">{escape(captions[index])}</figcaption>" if captions else ""
        figures.append(f'<figure class="chart">{svg}{caption}</figure>')
    return f'<div class="charts">{"".join(figures)}</div>' if figures else ""


def section(anchor: str, title: str, *body: str) -> str:
    content = "".join(part for part in body if part)
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{content}</section>'


def paragraph(text: str, css: str = "note") -> str:
    return f'<p class="{css}">{escape(text)}</p>'


def page(title: str, meta: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><p class=\"meta\">{escape(meta)}</p>"
            + "".join(sections) + "</body></html>\n")
