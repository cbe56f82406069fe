"""`locedit trace MODEL ...` (causal tracing of the UNet or the text encoder); its report is commands/report.py."""

from __future__ import annotations

import argparse
import json

from locedit.commands.common import add_model_args, add_options, settings_from_args
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
        if request.probes == "default":  # which set "default" meant: the model folder's own or the generic one
            config = json.loads((path.parent / "config.json").read_text())
            print(f"probes: default = {config['probes_file']} ({len(config['probes'])} probes)")
        print(
            f"corruption (noise {baselines[0]['noise'] if baselines else '?'}) destroyed the attribute in {destroyed} "
            f"of {len(baselines)} (prompt, seed) pairs; the others are flagged in baselines.csv and left out of "
            "heatmap averages (raise --noise, or --noise auto)"
        )
    return 0
