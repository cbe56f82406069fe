"""Arguments and helpers shared by several CLI commands (model loading, device, dtype, quiet)."""

from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """MODEL positional plus --device / --dtype / --quiet."""
    parser.add_argument("model", metavar="MODEL", help="local diffusers pipeline folder, or builtin:NAME (e.g. builtin:shapes)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (default: float32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_model(args: argparse.Namespace):
    from locedit.models import load_pipeline, parse_dtype, resolve_device

    device = resolve_device(args.device)  # validate before the (slow) load
    dtype = parse_dtype(args.dtype)
    return load_pipeline(args.model, device=device, dtype=dtype)
