"""`locedit trace MODEL ...` (causal tracing of the UNet or the text encoder) and `locedit report RUNDIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from locedit.commands.common import add_model_args, add_options, add_quiet, say, settings_from_args
from locedit.trace.engine import GenerationSettings, TraceSettings
from locedit.trace.runner import TraceRequest


def register(sub) -> None:
    p = sub.add_parser(
        "trace",
        help="causal tracing: which UNet layers / text-encoder states carry an attribute",
        description=(
            "Corrupt the subject's token embeddings (conditional CFG branch only), restore one clean "
            "UNet layer (at every UNet call) or text-encoder state per cell, and score the images. "
            "Results go to RUNDIR (config.json, cells/, results.csv); --resume continues a killed run. "
            "Runs sharded under `accelerate launch` or torchrun."
        ),
    )
    add_model_args(p)
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run directory")
    add_options(p, TraceRequest)  # --probes, --component, --layers, --noise, --seeds, --batch, --scorer, ...
    add_options(p, GenerationSettings)  # --steps, --guidance, --height, --width
    add_options(p, TraceSettings)  # --restore, --window, --min-drop, --no-padding
    p.set_defaults(func=run_trace_cmd)

    r = sub.add_parser(
        "report",
        help="draw heatmaps of a trace run (mean effect and 95%% interval over destroyed (prompt, seed) pairs)",
    )
    r.add_argument("run_dir", metavar="RUNDIR", help="a finished trace run directory")
    r.add_argument("--out", default=None, help="folder for the PNGs and heatmaps.csv (default: RUNDIR/report)")
    add_quiet(r)
    r.set_defaults(func=run_report_cmd)


def run_trace_cmd(args: argparse.Namespace) -> int:
    from locedit.trace.runner import run_trace

    request = settings_from_args(
        TraceRequest,
        args,
        model=args.model,
        out=args.out,
        device=args.device,
        dtype=args.dtype,
        generation=settings_from_args(GenerationSettings, args),
        settings=settings_from_args(TraceSettings, args),
    )
    path = run_trace(request, quiet=args.quiet)
    if path is not None:
        import csv

        with (path.parent / "baselines.csv").open(newline="") as f:
            baselines = list(csv.DictReader(f))
        destroyed = sum(b["destroyed"] == "1" for b in baselines)
        print(f"results: {path}")
        print(
            f"corruption (noise {baselines[0]['noise'] if baselines else '?'}) destroyed the attribute in {destroyed} "
            f"of {len(baselines)} (prompt, seed) pairs; the others are flagged in baselines.csv and left out of "
            "heatmap averages (raise --noise, or --noise auto)"
        )
    return 0


def run_report_cmd(args: argparse.Namespace) -> int:
    from locedit.report import draw_report
    from locedit.report.locogen import draw_locogen_report, is_locogen_run

    if is_locogen_run(args.run_dir):  # a `locedit locogen` run: its effect-per-window plot and tables
        written = draw_locogen_report(args.run_dir, args.out)
        for path in written:
            say(args, path)
        print(f"report: effect per window start, windows.csv and selection.json in {written[0].parent}")
        return 0
    written = draw_report(args.run_dir, args.out)
    for path in written:
        say(args, path)
    folder = Path(args.out) if args.out is not None else Path(args.run_dir) / "report"
    pngs = sum(path.suffix == ".png" for path in written)
    print(f"report: {pngs} heatmap(s) and heatmaps.csv (mean, 95% interval, n per cell) in {folder}")
    return 0
