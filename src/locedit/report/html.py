"""One self-contained HTML page from a report's parts (sections of notes, tables and PNG figures).

Figures are embedded as base64 data URIs, and the page's Content-Security-Policy lets it load nothing
else (no script, no style sheet, no font, no network): the file opens from disk in any browser, alone.
The same parts also print as plain text (tables only) for a terminal.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from locedit.io import atomic_path

# What the page may load: images from data: URIs and its own inline style; nothing else (no script, no network).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
.source { color: #666; font-family: monospace; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 2px 0; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #444; font-size: 12.5px; } .note { color: #444; } details summary { cursor: pointer; color: #225; }
"""


@dataclass
class Table:
    """A table of text cells. `numeric` columns (by index) are right-aligned; a `collapsed` table is
    folded under its caption (an HTML <details>, open on click) and left out of the text form."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: tuple[int, ...] = ()
    collapsed: bool = False


@dataclass
class Figure:
    """An image (PNG or JPEG bytes) with its caption."""

    image: bytes
    caption: str


@dataclass
class Section:
    """A heading, notes (plain-text paragraphs) and blocks (tables and figures), in order."""

    title: str
    notes: list[str] = field(default_factory=list)
    blocks: list[Table | Figure] = field(default_factory=list)


@dataclass
class Report:
    """A whole report: title, the run it shows (`kind`, `source` folder), summary lines and sections."""

    title: str
    kind: str
    source: str
    summary: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    @property
    def figures(self) -> list[Figure]:
        """Every figure of the report, in page order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def image_mime(data: bytes) -> str:
    """The MIME type of PNG or JPEG bytes (from their signature); ValueError for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    raise ValueError("not a PNG or JPEG image (the report embeds only those)")


def data_uri(data: bytes) -> str:
    """`data` (PNG or JPEG bytes) as a base64 data: URI."""
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.columns)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(v)}</td>' if j in t.numeric else f"<td>{_esc(v)}</td>" for j, v in enumerate(r)
        )
        + "</tr>"
        for r in t.rows
    )
    caption = f"<caption>{_esc(t.caption)}</caption>" if t.caption and not t.collapsed else ""
    table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
    if t.collapsed:
        return f"<details><summary>{_esc(t.caption or 'table')} ({len(t.rows)} rows)</summary>{table}</details>"
    return table


def _figure_html(f: Figure) -> str:
    caption = _esc(f.caption)
    return f'<figure><img src="{data_uri(f.image)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def render_html(report: Report) -> str:
    """The report as one HTML document: inline style, figures as data URIs, no script."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(report.title)}</h1>",
        f'<p class="source">{_esc(report.kind)} run · {_esc(report.source)}</p>',
    ]
    if report.summary:
        parts.append("<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in report.summary) + "</ul>")
    if len(report.sections) > 3:
        parts.append(
            "<nav><ul>"
            + "".join(f'<li><a href="#s{i}">{_esc(s.title)}</a></li>' for i, s in enumerate(report.sections))
            + "</ul></nav>"
        )
    for i, section in enumerate(report.sections):
        parts.append(f'<section id="s{i}"><h2>{_esc(section.title)}</h2>')
        parts.extend(f'<p class="note">{_esc(note)}</p>' for note in section.notes)
        for block in section.blocks:
            parts.append(_table_html(block) if isinstance(block, Table) else _figure_html(block))
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(report: Report, path: str | Path) -> Path:
    """Write the report's HTML to `path` atomically (a reader sees no file or the whole file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return path


def _text_table(t: Table) -> str:
    widths = [max(len(str(c)), *(len(str(r[j])) for r in t.rows)) for j, c in enumerate(t.columns)]

    def line(cells) -> str:
        return "  ".join(
            str(v).rjust(w) if j in t.numeric else str(v).ljust(w) for j, (v, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [t.caption] if t.caption else []
    out += [line(t.columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in t.rows]
    return "\n".join(out)


def render_text(report: Report) -> str:
    """The report's title, summary, notes and (uncollapsed) tables as plain text; figures are named only."""
    out = [report.title, f"{report.kind} run · {report.source}", *report.summary]
    for section in report.sections:
        out += ["", f"== {section.title}", *section.notes]
        for block in section.blocks:
            if isinstance(block, Table) and not block.collapsed:
                out += ["", _text_table(block)]
    n = len(report.figures)
    if n:
        out += ["", f"({n} figure(s): see the HTML report, `locedit report DIR --html`)"]
    return "\n".join(out)
