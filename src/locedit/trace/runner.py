"""One trace run end to end: validate a TraceRequest, plan its cells, create the store, execute the
units (sharded over accelerate/torchrun processes), and write results.csv.

Everything the user can get wrong is checked before the run directory is created: the settings
by TraceRequest (and GenerationSettings / TraceSettings) themselves, the rest in `plan_trace`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from locedit.errors import InvalidInputError
from locedit.models.loading import BUILTIN_PREFIX, DEFAULT_DEVICE, DEFAULT_DTYPE, builtin_path
from locedit.options import is_int, is_number, option, require, require_choice
from locedit.trace.engine import GenerationSettings, Tracer, TraceSettings, calibrate_noise
from locedit.trace.execute import execute
from locedit.trace.layers import parse_text_states, select_unet_cells
from locedit.trace.plan import Unit, plan_units
from locedit.trace.store import RunDirError, prepare_run_dir, write_results

COMPONENTS = ("unet", "text-encoder")


def parse_seeds(text: str | list[int]) -> list[int]:
    """ "0,1,2" -> [0, 1, 2] (--seeds); InvalidInputError with the fix otherwise. Lists pass through."""
    if isinstance(text, list):
        return text
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise InvalidInputError(
            f"--seeds {text!r} is malformed; give comma-separated non-negative integers, e.g. 0,1,2"
        )
    return [int(p) for p in parts]


def parse_noise(text: str | float) -> float | str:
    """--noise: a number (the noise scale in token-embedding stds) or "auto"."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"--noise {text!r} is not a number; give the noise scale (e.g. 3.0) or auto") from None


def probe_file(source: str | Path, model: str | Path) -> Path:
    """The probe file that --probes `source` names for `model` (a folder or builtin:NAME): `source` itself,
    or for "default" the model folder's own locedit_probes.jsonl when it holds one (prompts that fit the
    model's tokenizer and world), else locedit's generic set (DEFAULT_PROBES, for real SD models)."""
    from locedit.probes import DEFAULT_PROBES, MODEL_PROBES_FILE

    if str(source) != "default":
        return Path(source).expanduser()
    spec = str(model)
    folder = builtin_path(spec) if spec.startswith(BUILTIN_PREFIX) else Path(spec).expanduser()
    own = folder / MODEL_PROBES_FILE
    return own if own.is_file() else DEFAULT_PROBES


def parse_layers(values: list[str] | None) -> list[str] | None:
    """--layers, repeated and/or comma-separated, as one list (None when not given)."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass
class TraceRequest:
    """Everything `locedit trace` takes: the run's own settings, how images are generated
    (`generation`) and how restoration is done (`settings`). Each default is stated once, here or in
    GenerationSettings / TraceSettings; the CLI builds its flags from these three classes."""

    model: str  # local diffusers folder or builtin:NAME (CLI: MODEL)
    out: str  # run directory (CLI: --out RUNDIR)
    # The prompts traced: a JSONL file or "default": the model folder's locedit_probes.jsonl when it ships one
    # (builtin:shapes does), else the generic set for real SD models (src/locedit/probes/default.jsonl).
    probes: str = option(
        "default",
        help="probe JSONL file ({prompt, subject, attribute, value?} per line) or 'default': the model folder's "
        "locedit_probes.jsonl if it has one, else the shipped set for SD models",
    )
    # What to trace: UNet layers (restored at every UNet call) or text-encoder states (token × layer).
    component: str = option("unet", help="what to trace", choices=COMPONENTS)
    # UNet: kinds / globs / "+"-sets; text: residual, attn, mlp; None = all.
    layers: list[str] | None = option(
        None,
        action="append",
        parse=parse_layers,
        metavar="KIND|GLOB",
        shown="all",
        help="UNet: a kind (block, resnet, transformer, attn1, attn2, ff), a glob over module names, or NAME+NAME "
        "for one cell restoring a set; text encoder: residual, attn, mlp. Comma-separated or repeated",
    )
    # Noise scale in token-embedding stds (ROME's 3), or "auto" (the first of a schedule that destroys
    # noise_target of the (prompt, seed) pairs).
    noise: float | str = option(3.0, parse=parse_noise, help="noise scale in token-embedding stds, or auto")
    # --noise auto: fraction of (prompt, seed) pairs the corruption must destroy (ROME's spirit: most of them).
    noise_target: float = option(
        0.8, parse=float, help="with --noise auto: fraction of (prompt, seed) pairs the corruption must destroy"
    )
    # Initial-latent (and corruption-noise) seeds; more seeds average out one image's luck.
    seeds: list[int] = option(default_factory=lambda: [0], parse=parse_seeds, help="comma-separated seeds, e.g. 0,1")
    # Restored rows per denoising loop (plus the clean and corrupted rows): memory grows with it.
    batch: int = option(8, parse=int, help="restored rows per denoising loop")
    # How images are scored: pixel (no model needed), clip:PATH, or builtin[:WORLD|:PATH] (the built-in models'
    # classifier's probability of the probe's value).
    scorer: str = option("pixel", help="clip:PATH (local CLIP folder), pixel, or builtin[:shapes|scenes|PATH]")
    # PNGs of every generation (clean, corrupted, each restored row) under RUNDIR/images; off: they are many.
    save_images: bool = option(False, action="flag", help="write PNGs of every generation")
    # Continue the run already in `out` (same settings), skipping cells whose records exist; off: `out` must be new.
    resume: bool = option(False, action="flag", help="continue the run in RUNDIR, skipping finished cells")
    device: str = DEFAULT_DEVICE  # cpu, cuda, cuda:N, mps, auto (CLI: --device)
    dtype: str = DEFAULT_DTYPE  # float32, float16, bfloat16 (CLI: --dtype)
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # steps, guidance, image size
    settings: TraceSettings = field(default_factory=TraceSettings)  # restore, window, min_drop, padding

    def __post_init__(self):
        require_choice(self, "component", COMPONENTS)
        require(self, "batch", is_int(self.batch, 1), "a positive integer")
        if isinstance(self.seeds, tuple):
            self.seeds = list(self.seeds)
        seeds_ok = isinstance(self.seeds, list) and bool(self.seeds) and all(is_int(s, 0) for s in self.seeds)
        require(self, "seeds", seeds_ok, "non-negative integers, e.g. 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise InvalidInputError(f"--seeds repeats a seed ({self.seeds!r}); give each seed once")
        require(
            self,
            "noise",
            self.noise == "auto" or (is_number(self.noise) and self.noise > 0),
            "a number > 0 (in token-embedding stds) or auto",
        )
        require(
            self, "noise_target", is_number(self.noise_target) and 0 < self.noise_target <= 1, "a fraction in (0, 1]"
        )


@dataclass
class TracePlan:
    """A validated request: the loaded tracer, probes, units and the config to store."""

    request: TraceRequest
    tracer: Tracer
    probes: list
    units: list[Unit]
    config: dict
    noise: float  # the noise scale the run uses (calibrated, for --noise auto)


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
    from locedit.models import load_pipeline, parse_dtype
    from locedit.probes import load_probes, validate_probes
    from locedit.scorers import check_scorer_spec, make_scorer

    source = probe_file(req.probes, req.model)  # resolved once: loaded here, recorded in config.json
    probes = load_probes(source)
    check_scorer_spec(req.scorer)
    stored = _stored_config(Path(req.out), req.resume)
    device = _device(req.device, local_rank)
    dtype = parse_dtype(req.dtype)
    if pipe is None:
        pipe = load_pipeline(req.model, device=device, dtype=dtype)
    cells, states = _select_cells(req, pipe)
    tracer = Tracer(pipe, make_scorer(req.scorer, device), req.generation, req.settings)
    validate_probes(probes, [h.tokenizer for h in tracer.handles])
    units = _plan_units(req, tracer, probes, cells, states)
    noise, fraction = _noise_scale(req, tracer, probes, stored)
    config = _run_config(req, tracer, source, probes, units, noise, fraction) | {
        "traced": _traced(tracer, cells, states)
    }
    return TracePlan(request=req, tracer=tracer, probes=probes, units=units, config=config, noise=noise)


def _stored_config(out: Path, resume: bool) -> dict | None:
    """The config.json of the run in `out` when resuming it; None for a new run. Raises RunDirError
    when `out` holds something else, or a run without --resume."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise RunDirError(f"--out {str(out)!r} is a file; give a folder")
    if not any(out.iterdir()):
        return None
    if not (out / "config.json").is_file():
        raise RunDirError(f"--out {str(out)!r} exists and is not a trace run; choose an empty or new folder")
    if not resume:
        raise RunDirError(
            f"--out {str(out)!r} already holds a trace run; pass --resume to continue it or choose a new folder"
        )
    return json.loads((out / "config.json").read_text())


def _device(spec: str, local_rank: int):
    """The torch device of `spec`; a bare "cuda" becomes this process' GPU under torchrun/accelerate."""
    from locedit.models import resolve_device

    device = resolve_device(spec)
    if device.type == "cuda" and device.index is None and local_rank:
        import torch

        device = torch.device("cuda", local_rank)
    return device


def _select_cells(req: TraceRequest, pipe) -> tuple[list | None, list[str] | None]:
    """(UNet cells, None) for --component unet, (None, text-encoder states) for text-encoder."""
    if req.component == "unet":
        return select_unet_cells(_unet_layers(pipe), req.layers, req.settings.window), None
    return None, parse_text_states(req.layers)


def _plan_units(
    req: TraceRequest, tracer: Tracer, probes: list, cells: list | None, states: list[str] | None
) -> list[Unit]:
    """The run's units: the same UNet cells for every probe, or each probe's token × layer text cells."""
    if cells is not None:
        return plan_units(probes, req.seeds, lambda pi: cells, req.batch)
    text_cells = {pi: tracer.text_cells(p, states, req.settings.window) for pi, p in enumerate(probes)}
    return plan_units(probes, req.seeds, lambda pi: text_cells[pi], req.batch)


def _noise_scale(req: TraceRequest, tracer: Tracer, probes: list, stored: dict | None) -> tuple[float, float | None]:
    """(noise scale, fraction of pairs destroyed at it): --noise as given, or calibrated for --noise
    auto (a resumed auto run keeps the scale it recorded). The fraction is None unless calibrated."""
    if req.noise != "auto":
        return float(req.noise), None
    if stored is not None and stored.get("noise_spec") == "auto":
        return float(stored["noise"]), stored.get("noise_destroyed_fraction")
    return calibrate_noise(tracer, probes, req.seeds, req.noise_target)


def _run_config(
    req: TraceRequest,
    tracer: Tracer,
    source: Path,
    probes: list,
    units: list[Unit],
    noise: float,
    fraction: float | None,
) -> dict:
    """config.json of the run (without "traced"): everything that defines it (store.RUN_KEYS) and
    what it measured on the way (noise scale, embedding stds, token strings, subject spans)."""
    auto = req.noise == "auto"
    return {
        "model": str(req.model),
        "family": tracer.family.name,
        "component": req.component,
        "probes_source": str(req.probes),
        "probes_file": str(source.resolve()),  # what "default" resolved to
        "probes": [p.to_dict() for p in probes],
        "seeds": list(req.seeds),
        "layers": list(req.layers) if req.layers else None,
        "window": req.settings.window,
        "noise_spec": "auto" if auto else float(req.noise),
        "noise": noise,
        "noise_target": req.noise_target if auto else None,
        "noise_destroyed_fraction": fraction,
        "embedding_std": {h.name: s for h, s in zip(tracer.handles, tracer.embedding_std)},
        "steps": req.generation.steps,
        "guidance": req.generation.guidance,
        "batch": req.batch,
        "restore": req.settings.restore,
        "scorer": tracer.scorer.name if req.scorer.startswith("clip:") else req.scorer,
        "min_drop": req.settings.min_drop if req.settings.min_drop is not None else tracer.scorer.min_drop,
        "height": req.generation.height,
        "width": req.generation.width,
        "dtype": req.dtype,
        "cells": sum(len(u.cells) for u in units),
        "units": len(units),
        "tokens": _token_strings(req, tracer, probes),
        "padding": req.settings.padding if req.component == "text-encoder" else None,
        "subject_spans": [[list(span) for span in tracer.spans(p)] for p in probes],
        "row_layout": "row 0 clean, row 1 corrupted, rows 2.. restored (one per cell); CFG batch [uncond ; cond]",
    }


def _token_strings(req: TraceRequest, tracer: Tracer, probes: list) -> list[list[list[str]]]:
    """Per probe, per encoder: token strings (BOS..EOS); text tracing with padding adds a last
    "<padding ×k>" entry naming the padding row."""
    out = []
    for p in probes:
        per_encoder = []
        for e, h in enumerate(tracer.handles):
            tokens = h.tokenizer.convert_ids_to_tokens(h.tokenizer(p.prompt, truncation=False).input_ids)
            padding = tracer.padding_positions(p, e) if req.component == "text-encoder" else ()
            per_encoder.append(tokens + ([f"<padding ×{len(padding)}>"] if padding else []))
        out.append(per_encoder)
    return out


def _traced(tracer: Tracer, cells: list | None, states: list[str] | None) -> list[dict] | dict:
    """config.json's "traced": the UNet cells (label, state, modules), or the text states and encoders."""
    if cells is not None:
        return [{"label": c.label, "state": c.state, "modules": list(c.modules)} for c in cells]
    return {
        "states": states,
        "encoders": [h.name for h in tracer.handles],
        "layers": [h.num_layers for h in tracer.handles],
    }


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

    def work(progress: Callable[[int], None] | None) -> None:
        execute(
            plan.tracer,
            plan.probes,
            plan.units,
            out,
            req.component,
            plan.noise,
            req.save_images,
            rank=rank,
            world=world,
            progress=progress,
        )

    return run_sharded(
        plan.units,
        rank,
        world,
        barrier,
        quiet,
        "cell",
        f"trace {req.component}",
        work,
        lambda: write_results(out, plan.units),
    )


def run_sharded(
    units: Sequence,
    rank: int,
    world: int,
    barrier: Callable[[], None],
    quiet: bool,
    unit: str,
    desc: str,
    work: Callable[[Callable[[int], None] | None], None],
    finish: Callable[[], Path],
) -> Path | None:
    """The run loop shared by tracing and LocoGen: work(progress) computes this rank's units (unit i
    belongs to rank i % world) under a progress bar over their cells (rank 0 only, none when quiet);
    after every rank is done, rank 0 returns finish() (the results file) and the others None."""
    bar = None
    if not quiet and rank == 0:
        from tqdm.auto import tqdm

        mine = [u for i, u in enumerate(units) if i % world == rank]
        bar = tqdm(total=sum(len(u.cells) for u in mine), unit=unit, desc=desc)
    try:
        work(bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    barrier()
    return finish() if rank == 0 else None
