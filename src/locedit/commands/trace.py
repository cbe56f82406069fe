"""`locedit trace MODEL ...` (causal tracing of the UNet or the text encoder) and `locedit report RUNDIR`."""

from __future__ import annotations

import argparse

from locedit.commands.common import add_model_args
from locedit.errors import InvalidInputError


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
    p.add_argument("--probes", default="default", help="probe JSONL file ({prompt, subject, attribute, value?} "
                   "per line) or 'default' for the shipped set (default: default)")
    p.add_argument("--component", choices=("unet", "text-encoder"), default="unet", help="what to trace")
    p.add_argument("--layers", action="append", default=None, metavar="KIND|GLOB",
                   help="UNet: a kind (block, resnet, transformer, attn1, attn2, ff), a glob over module names, "
                   "or NAME+NAME for one cell restoring a set; text encoder: residual, attn, mlp. Comma-separated "
                   "or repeated (default: all)")
    p.add_argument("--window", type=int, default=1, help="restore K consecutive layers together (default: 1)")
    p.add_argument("--noise", default="3.0", help="noise scale ν in token-embedding stds, or auto (default: 3.0)")
    p.add_argument("--noise-target", type=float, default=0.8,
                   help="with --noise auto: fraction of probes the corruption must destroy (default: 0.8)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1 (default: 0)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    p.add_argument("--batch", type=int, default=8, help="restored rows per denoising loop (default: 8)")
    p.add_argument("--no-padding", dest="padding", action="store_false",
                   help="text encoder: skip the extra row that restores all padding positions after EOS")
    p.add_argument("--restore", choices=("cond", "both"), default="cond",
                   help="UNet: restore in the conditional CFG half only (default) or in both halves")
    p.add_argument("--scorer", default="pixel", help="clip:PATH (local CLIP folder), pixel, or builtin (default: pixel)")
    p.add_argument("--min-drop", type=float, default=None,
                   help="score drop that counts as 'corruption destroyed the attribute' (default: the scorer's)")
    p.add_argument("--height", type=int, default=None, help="image height (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the model's)")
    p.add_argument("--save-images", action="store_true", help="write PNGs of every generation")
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in RUNDIR, skipping finished cells")
    p.set_defaults(func=run_trace_cmd)

    r = sub.add_parser("report", help="draw heatmaps of a trace run")
    r.add_argument("run_dir", metavar="RUNDIR", help="a finished trace run directory")
    r.add_argument("--out", default=None, help="folder for the PNGs (default: RUNDIR/report)")
    r.add_argument("--quiet", action="store_true", help="do not list the files written")
    r.set_defaults(func=run_report_cmd)


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; ValueError with the fix otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise InvalidInputError(f"--seeds {text!r} is malformed; give comma-separated non-negative integers, e.g. 0,1,2")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise InvalidInputError(f"--seeds {text!r} repeats a seed")
    return seeds


def parse_noise(text: str) -> float | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"--noise {text!r} is not a number; give ν (e.g. 3.0) or auto") from None
    if not value > 0:
        raise InvalidInputError(f"--noise must be > 0 (got {text})")
    return value


def _layers(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def run_trace_cmd(args: argparse.Namespace) -> int:
    from locedit.trace.runner import TraceRequest, run_trace

    request = TraceRequest(
        model=args.model,
        out=args.out,
        probes=args.probes,
        component=args.component,
        layers=_layers(args.layers),
        window=args.window,
        noise=parse_noise(args.noise),
        noise_target=args.noise_target,
        seeds=parse_seeds(args.seeds),
        steps=args.steps,
        guidance=args.guidance,
        batch=args.batch,
        restore=args.restore,
        padding=args.padding,
        scorer=args.scorer,
        min_drop=args.min_drop,
        save_images=args.save_images,
        resume=args.resume,
        device=args.device,
        dtype=args.dtype,
        height=args.height,
        width=args.width,
    )
    path = run_trace(request, quiet=args.quiet)
    if path is not None and not args.quiet:
        import csv

        with (path.parent / "baselines.csv").open(newline="") as f:
            baselines = list(csv.DictReader(f))
        destroyed = sum(b["destroyed"] == "1" for b in baselines)
        print(f"results: {path}")
        print(f"corruption (nu={baselines[0]['noise'] if baselines else '?'}) destroyed the attribute in {destroyed} of "
              f"{len(baselines)} (prompt, seed) pairs; the others are flagged in baselines.csv and left out of "
              "heatmap averages (raise --noise, or --noise auto)")
    return 0


def run_report_cmd(args: argparse.Namespace) -> int:
    from locedit.report import draw_report

    written = draw_report(args.run_dir, args.out)
    if not args.quiet:
        for path in written:
            print(path)
    return 0
