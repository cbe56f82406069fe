"""One trace run end to end: validate a TraceRequest, plan its cells, create the store, execute the
units (sharded over accelerate/torchrun processes), and write results.csv.

Everything the user can get wrong is checked in `plan_trace`, before the run directory is created.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from locedit.errors import InvalidInputError
from locedit.trace.engine import GenerationSettings, Tracer, TraceSettings, calibrate_noise
from locedit.trace.execute import execute
from locedit.trace.layers import parse_text_states, select_unet_cells
from locedit.trace.plan import Unit, plan_units
from locedit.trace.store import RunDirError, prepare_run_dir, write_results


@dataclass
class TraceRequest:
    """Everything `locedit trace` takes."""

    model: str  # local diffusers folder or builtin:NAME
    out: str  # run directory
    probes: str = "default"  # JSONL file or "default"
    component: str = "unet"  # "unet" or "text-encoder"
    layers: list[str] | None = None  # UNet: kinds / globs / "+"-sets; text: residual,attn,mlp; None = all
    window: int = 1  # consecutive layers restored together (ROME's window); 1 = single layers
    noise: float | str = 3.0  # ν in token-embedding stds, or "auto"
    noise_target: float = 0.8  # --noise auto: fraction of (prompt, seed) pairs that must be destroyed
    seeds: list[int] = field(default_factory=lambda: [0])  # initial-latent (and noise) seeds
    steps: int = 25  # denoising steps
    guidance: float = 7.5  # CFG scale
    batch: int = 8  # restored rows per denoising loop
    restore: str = "cond"  # UNet restoration in the conditional CFG half, or "both"
    padding: bool = True  # text encoder: one extra token row restoring every padding position after EOS
    scorer: str = "pixel"  # pixel, clip:PATH or builtin
    min_drop: float | None = None  # destroyed threshold; None = the scorer's default
    save_images: bool = False  # write PNGs of every generation
    resume: bool = False  # continue a run in `out`
    device: str = "cpu"  # cpu, cuda, cuda:N, mps, auto
    dtype: str = "float32"  # float32, float16, bfloat16
    height: int | None = None  # pixels; None = pipeline default
    width: int | None = None  # pixels; None = pipeline default


@dataclass
class TracePlan:
    """A validated request: the loaded tracer, probes, units and the config to store."""

    request: TraceRequest
    tracer: Tracer
    probes: list
    units: list[Unit]
    config: dict
    nu: float


def _check_request(req: TraceRequest) -> None:
    if req.component not in ("unet", "text-encoder"):
        raise InvalidInputError(f"--component must be unet or text-encoder (got {req.component!r})")
    if req.batch < 1:
        raise InvalidInputError(f"--batch must be >= 1 (got {req.batch})")
    if req.steps < 1:
        raise InvalidInputError(f"--steps must be >= 1 (got {req.steps})")
    if req.window < 1:
        raise InvalidInputError(f"--window must be >= 1 (got {req.window})")
    if not req.seeds or any(not isinstance(s, int) or s < 0 for s in req.seeds):
        raise InvalidInputError(f"--seeds must be non-negative integers, e.g. 0,1,2 (got {req.seeds!r})")
    if len(set(req.seeds)) != len(req.seeds):
        raise InvalidInputError(f"--seeds repeats a seed ({req.seeds!r})")
    if req.restore not in ("cond", "both"):
        raise InvalidInputError(f"--restore must be cond or both (got {req.restore!r})")
    if isinstance(req.noise, str) and req.noise != "auto":
        raise InvalidInputError(f"--noise must be a number (in token-embedding stds) or auto (got {req.noise!r})")
    if not isinstance(req.noise, str) and not req.noise > 0:
        raise InvalidInputError(f"--noise must be > 0 (got {req.noise})")


def _distributed(cpu: bool) -> tuple[int, int, int, Callable[[], None]]:
    """(rank, world size, local rank, barrier) from accelerate's PartialState (1 process: trivial).

    `cpu`: the processes compute on CPU (gloo backend); otherwise accelerate picks the GPU backend.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, 0, lambda: None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, state.local_process_index, state.wait_for_everyone


def plan_trace(req: TraceRequest, pipe=None, local_rank: int = 0) -> TracePlan:
    """Validate `req` and build its plan; writes nothing. `pipe` skips loading the model."""
    from locedit.models import load_pipeline, parse_dtype, resolve_device
    from locedit.probes import load_probes, validate_probes
    from locedit.scorers import check_scorer_spec, make_scorer

    _check_request(req)
    probes = load_probes(req.probes)
    check_scorer_spec(req.scorer)
    out = Path(req.out)
    stored = None
    if out.exists():
        if not out.is_dir():
            raise RunDirError(f"--out {str(out)!r} is a file; give a folder")
        if any(out.iterdir()):
            if not (out / "config.json").is_file():
                raise RunDirError(f"--out {str(out)!r} exists and is not a trace run; choose an empty or new folder")
            if not req.resume:
                raise RunDirError(f"--out {str(out)!r} already holds a trace run; pass --resume to continue it "
                                  "or choose a new folder")
            stored = json.loads((out / "config.json").read_text())
    device = resolve_device(req.device)
    if device.type == "cuda" and device.index is None and local_rank:
        import torch

        device = torch.device("cuda", local_rank)
    dtype = parse_dtype(req.dtype)
    if pipe is None:
        pipe = load_pipeline(req.model, device=device, dtype=dtype)
    generation = GenerationSettings(steps=req.steps, guidance=req.guidance, height=req.height, width=req.width)
    settings = TraceSettings(noise=3.0 if req.noise == "auto" else float(req.noise), restore=req.restore,
                             batch=req.batch, window=req.window, min_drop=req.min_drop,
                             padding=req.padding)
    if req.component == "unet":
        cells = select_unet_cells(_unet_layers(pipe), req.layers, req.window)
        states = None
    else:
        states = parse_text_states(req.layers)
        cells = None
    scorer = make_scorer(req.scorer, device)
    tracer = Tracer(pipe, scorer, generation, settings)
    validate_probes(probes, [h.tokenizer for h in tracer.handles])

    if cells is not None:
        text_cells = None
        units = plan_units(probes, req.seeds, lambda pi: cells, req.batch)
    else:
        text_cells = {pi: tracer.text_cells(p, states, req.window) for pi, p in enumerate(probes)}
        units = plan_units(probes, req.seeds, lambda pi: text_cells[pi], req.batch)

    fraction = None
    if req.noise == "auto":
        if stored is not None and stored.get("noise_spec") == "auto":
            nu = float(stored["noise"])
            fraction = stored.get("noise_destroyed_fraction")
        else:
            nu, fraction = calibrate_noise(tracer, probes, req.seeds, req.noise_target)
    else:
        nu = float(req.noise)
    tracer.settings.noise = nu

    config = {
        "model": str(req.model),
        "family": tracer.family.name,
        "component": req.component,
        "probes_source": str(req.probes),
        "probes": [p.to_dict() for p in probes],
        "seeds": list(req.seeds),
        "layers": list(req.layers) if req.layers else None,
        "window": req.window,
        "noise_spec": "auto" if req.noise == "auto" else float(req.noise),
        "noise": nu,
        "noise_target": req.noise_target if req.noise == "auto" else None,
        "noise_destroyed_fraction": fraction,
        "embedding_std": {h.name: s for h, s in zip(tracer.handles, tracer.embedding_std)},
        "steps": req.steps,
        "guidance": req.guidance,
        "batch": req.batch,
        "restore": req.restore,
        "scorer": scorer.name if req.scorer.startswith("clip:") else req.scorer,
        "min_drop": req.min_drop if req.min_drop is not None else scorer.min_drop,
        "height": req.height,
        "width": req.width,
        "dtype": req.dtype,
        "cells": sum(len(u.cells) for u in units),
        "units": len(units),
        # Per probe, per encoder: token strings (BOS..EOS) and the subject's [start, end) span.
        # (text tracing with padding: a last "<padding ×k>" entry names the padding row)
        "tokens": [[h.tokenizer.convert_ids_to_tokens(h.tokenizer(p.prompt, truncation=False).input_ids)
                    + ([f"<padding ×{len(tracer.padding_positions(p, e))}>"]
                       if req.component == "text-encoder" and tracer.padding_positions(p, e) else [])
                    for e, h in enumerate(tracer.handles)] for p in probes],
        "padding": req.padding if req.component == "text-encoder" else None,
        "subject_spans": [[list(span) for span in tracer.spans(p)] for p in probes],
        "row_layout": "row 0 clean, row 1 corrupted, rows 2.. restored (one per cell); CFG batch [uncond ; cond]",
        "traced": (
            [{"label": c.label, "state": c.state, "modules": list(c.modules)} for c in cells]
            if cells is not None else {"states": states, "encoders": [h.name for h in tracer.handles],
                                       "layers": [h.num_layers for h in tracer.handles]}
        ),
    }
    return TracePlan(request=req, tracer=tracer, probes=probes, units=units, config=config, nu=nu)


def _unet_layers(pipe):
    from locedit.trace.layers import unet_layers

    return unet_layers(pipe.unet)


def run_trace(req: TraceRequest, pipe=None, quiet: bool = True) -> Path | None:
    """Run (or resume) a trace. Under accelerate/torchrun, units are sharded over the processes;
    every rank writes its own cell records and rank 0 writes results.csv. Returns its path on rank 0.
    """
    from locedit.models import resolve_device

    rank, world, local_rank, barrier = _distributed(cpu=resolve_device(req.device).type == "cpu")
    plan = plan_trace(req, pipe=pipe, local_rank=local_rank)
    out = Path(req.out)
    barrier()  # every rank has validated against the untouched --out before rank 0 creates it
    if rank == 0:
        prepare_run_dir(out, plan.config, req.resume)
    barrier()
    mine = [u for i, u in enumerate(plan.units) if i % world == rank]
    bar = None
    if not quiet and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(u.cells) for u in mine), unit="cell", desc=f"trace {req.component}")
    try:
        execute(plan.tracer, plan.probes, plan.units, out, req.component, plan.nu, req.save_images,
                rank=rank, world=world, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    barrier()
    if rank == 0:
        return write_results(out, plan.units)
    return None
