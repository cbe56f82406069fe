"""Heatmaps of trace runs (matplotlib PNGs with 95% intervals over (prompt, seed) pairs, and their
table), drawn from a run directory's results.csv; image grids for edit evaluations."""

from locedit.report.heatmaps import (
    TOKEN_CATEGORIES,
    CellStat,
    Heatmap,
    cell_stats,
    draw_heatmap,
    draw_report,
    heatmaps,
    t_interval,
    text_prompt,
    text_summary,
    token_categories,
    unet_by_attribute,
    unet_by_prompt,
)

__all__ = [
    "TOKEN_CATEGORIES",
    "CellStat",
    "Heatmap",
    "cell_stats",
    "draw_heatmap",
    "draw_report",
    "heatmaps",
    "t_interval",
    "text_prompt",
    "text_summary",
    "token_categories",
    "unet_by_attribute",
    "unet_by_prompt",
]
