"""`locedit locogen MODEL --probes FILE ...`: LocoGen (feed the altered prompt to windows of
cross-attention layers, score the images) and its summary (per-window effects, the picked window, plot)."""

from __future__ import annotations

import argparse

from locedit.commands.common import add_model_args, add_options, say, settings_from_args
from locedit.trace.engine import GenerationSettings
from locedit.trace.locogen import LocoGenRequest, LocoGenSettings


def register(sub) -> None:
    p = sub.add_parser(
        "locogen",
        help="LocoGen: which window of cross-attention layers, fed the altered prompt, changes the attribute",
        description=(
            "For each window of m consecutive cross-attention layers, generate with the probe's 'altered' prompt "
            "fed to to_k/to_v of the window's layers (conditional CFG half, every step) and the original prompt "
            "elsewhere, from the clean image's seed, and score the images. Results go to RUNDIR (config.json, "
            "cells/, results.csv, report/windows.csv, report/selection.json, report/locogen_effect.png); "
            "--resume continues a killed run. Runs sharded under `accelerate launch` or torchrun."
        ),
    )
    add_model_args(p)
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run directory")
    add_options(p, LocoGenRequest)  # --probes, --seeds, --batch, --scorer, --save-images, --resume
    add_options(p, GenerationSettings)  # --steps, --guidance, --height, --width
    add_options(p, LocoGenSettings)  # --window, --max-window, --threshold, --target
    p.set_defaults(func=run_locogen_cmd)


def run_locogen_cmd(args: argparse.Namespace) -> int:
    from locedit.report.locogen import ALL, draw_locogen_report, select_windows
    from locedit.trace.locogen import run_locogen

    request = settings_from_args(
        LocoGenRequest,
        args,
        model=args.model,
        out=args.out,
        device=args.device,
        dtype=args.dtype,
        generation=settings_from_args(GenerationSettings, args),
        settings=settings_from_args(LocoGenSettings, args),
    )
    path = run_locogen(request, quiet=args.quiet)
    if path is None:  # not rank 0
        return 0
    written = draw_locogen_report(path.parent)
    for item in written:
        say(args, item)
    print(f"results: {path}")
    picks = select_windows(path.parent)
    for attribute, pick in sorted(picks.items(), key=lambda kv: (kv[0] == ALL, kv[0])):
        interval = "" if pick["lo"] != pick["lo"] else f" [{pick['lo']:.2f}, {pick['hi']:.2f}]"
        status = "" if pick["reached"] else f" (no window reached the threshold {pick['threshold']:g})"
        print(
            f"{attribute}: window m={pick['window']} layers {pick['indices'][0]}..{pick['indices'][-1]} "
            f"effect {pick['mean']:.2f}{interval} n={pick['n']}{status}"
        )
    return 0
