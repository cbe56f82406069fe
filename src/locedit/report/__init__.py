"""Heatmaps of trace runs (matplotlib PNGs), drawn from a run directory's results.csv."""

from locedit.report.heatmaps import TOKEN_CATEGORIES, draw_report, text_grid, text_summary, token_categories, unet_table

__all__ = ["TOKEN_CATEGORIES", "draw_report", "text_grid", "text_summary", "token_categories", "unet_table"]
