"""`locedit report DIR [--html] [--out PATH]`: the report of a run folder (trace, LocoGen, eval or comparison run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from locedit.commands.common import add_quiet, say


def register(sub) -> None:
    r = sub.add_parser(
        "report",
        help="report a run folder: trace heatmaps, eval rates and grids, method comparisons (--html: one page)",
        description=(
            "DIR is a run folder; its kind is told by its files: a trace run (results.csv, baselines.csv, "
            "config.json), a LocoGen run (results.csv, config.json of `locedit locogen`), an eval run "
            "(results.csv, results.json, items.jsonl) or a comparison run "
            "(comparison.csv, comparison.json). --html writes one self-contained HTML file (images embedded, "
            "no script, no network; opens from disk). Without --html a trace run gets its heatmaps as PNGs and "
            "heatmaps.csv, and other runs print their tables."
        ),
    )
    r.add_argument("run_dir", metavar="DIR", help="a finished run folder")
    r.add_argument(
        "--html",
        action="store_true",
        help="write one self-contained HTML report (default file: DIR/report.html)",
    )
    r.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="with --html: the HTML file to write (default DIR/report.html); without: the folder for a trace "
        "run's PNGs and heatmaps.csv (default DIR/report)",
    )
    add_quiet(r)
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locedit.report.runs import build_report, detect_run, write_report_html

    kind = detect_run(args.run_dir)
    if args.html:
        out = Path(args.out) if args.out is not None else None
        if out is not None and out.is_dir():
            out = out / "report.html"
        path, report = write_report_html(args.run_dir, out)
        size = path.stat().st_size / 1024
        print(
            f"report: {path} ({kind.name} run, {len(report.sections)} section(s), "
            f"{len(report.figures)} image(s) embedded, {size:,.0f} KiB); open it in a browser"
        )
        return 0
    if kind.name == "trace":
        return _trace_folder(args)
    if kind.name == "locogen":
        return _locogen_folder(args)
    from locedit.report.html import render_text

    print(render_text(build_report(args.run_dir)))  # its last line points to --html for the figures
    return 0


def _trace_folder(args: argparse.Namespace) -> int:
    """A trace run's heatmaps as PNGs and heatmaps.csv in a folder (the report before --html existed)."""
    from locedit.report import draw_report

    written = draw_report(args.run_dir, args.out)
    for path in written:
        say(args, path)
    folder = Path(args.out) if args.out is not None else Path(args.run_dir) / "report"
    pngs = sum(path.suffix == ".png" for path in written)
    print(f"report: {pngs} heatmap(s) and heatmaps.csv (mean, 95% interval, n per cell) in {folder}")
    return 0


def _locogen_folder(args: argparse.Namespace) -> int:
    """A LocoGen run's effect-per-window plot, windows.csv and selection.json in a folder."""
    from locedit.report.locogen import draw_locogen_report

    written = draw_locogen_report(args.run_dir, args.out)
    for path in written:
        say(args, path)
    print(f"report: effect per window start, windows.csv and selection.json in {written[0].parent}")
    return 0
