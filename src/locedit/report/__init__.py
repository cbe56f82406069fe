"""Heatmaps of trace runs (matplotlib PNGs with 95% intervals over (prompt, seed) pairs, and their
table), drawn from a run directory's results.csv; image grids for edit evaluations; run folders (trace,
eval, comparison) told by their files and reported as one self-contained HTML page."""

from locedit.report.heatmaps import (
    TOKEN_CATEGORIES,
    CellStat,
    Heatmap,
    cell_stats,
    draw_heatmap,
    draw_report,
    heatmap_png,
    heatmaps,
    t_interval,
    text_prompt,
    text_summary,
    token_categories,
    unet_by_attribute,
    unet_by_prompt,
)
from locedit.report.html import Figure, Report, Section, Table, render_html, render_text, write_html
from locedit.report.runs import RUN_KINDS, RunKind, build_report, detect_run, register_run_kind, write_report_html

__all__ = [
    "RUN_KINDS",
    "TOKEN_CATEGORIES",
    "CellStat",
    "Figure",
    "Heatmap",
    "Report",
    "RunKind",
    "Section",
    "Table",
    "build_report",
    "cell_stats",
    "detect_run",
    "draw_heatmap",
    "draw_report",
    "heatmap_png",
    "heatmaps",
    "register_run_kind",
    "render_html",
    "render_text",
    "t_interval",
    "text_prompt",
    "text_summary",
    "token_categories",
    "unet_by_attribute",
    "unet_by_prompt",
    "write_html",
    "write_report_html",
]
