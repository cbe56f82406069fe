"""LocoGen (Basu et al., "On Mechanistic Knowledge Localization in Text-to-Image Generative Models",
ICML 2024): feed a prompt without the attribute (the probe's `altered` prompt) to a window of m
consecutive cross-attention layers, the original prompt to every other one, and score the images.

The M cross-attention layers (every attn2 of the UNet, in forward order, for every family incl.
SDXL) are indexed 0..M-1; window (m, j) is layers j..j+m-1. In those layers the altered prompt's
text-encoder output replaces the original's as the input of `to_k` and `to_v` (the only readers of
`encoder_hidden_states` in a cross-attention), in the conditional half of the classifier-free
guidance batch only, at every denoising step.

Row layout of one unit (a probe, a seed and up to `batch` windows), every row from the same latent:

    row 0        clean      (the original prompt everywhere)
    row 1        altered    (the altered prompt everywhere: its own image, SDXL's pooled embedding too)
    row 2 + j    window_j   (the original prompt, with window j's layers fed the altered one)

Scores (`target`): "original" scores every image for the probe (style, objects: the window that
lowers the score most), "altered" for the altered prompt (facts: the window that raises it most;
the CLIP scorer reads the altered prompt, the built-in classifier the value the altered image shows).
A window's effect is (score_window − score_clean) / (score_altered − score_clean): the share of the
clean → altered change that feeding only that window reproduces (1: all of it). A (probe, seed) pair
whose altered image moves the score by less than the scorer's min_drop is flagged `changed = 0`.

Results use the tracing store (store.py): config.json, one record per window, images/, results.csv
(LOCOGEN_COLUMNS); resumable (--resume) and sharded over accelerate/torchrun processes. The
per-window means with intervals, the `--window auto` choice and the plot are drawn from results.csv
by locedit.report.locogen.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from locedit.errors import InvalidInputError
from locedit.io import atomic_path
from locedit.models.loading import DEFAULT_DEVICE, DEFAULT_DTYPE
from locedit.options import is_int, is_number, option, require, require_choice
from locedit.probes import Probe
from locedit.scorers import Scorer
from locedit.trace.engine import GenerationSettings, Tracer, effect
from locedit.trace.layers import unet_layers
from locedit.trace.plan import Unit, plan_units
from locedit.trace.runner import _device, _distributed, parse_seeds, probe_file, run_sharded
from locedit.trace.store import RunDirError, _csv_value, has_record, prepare_run_dir, save_png, write_record

TARGETS = ("original", "altered")
LOCOGEN_COLUMNS = (
    "cell_id",
    "prompt_index",
    "prompt",
    "subject",
    "attribute",
    "altered",
    "seed",
    "window",
    "start",
    "layers",
    "score_clean",
    "score_altered",
    "score_window",
    "effect",
    "changed",
)
# config.json keys (besides store.RUN_KEYS) that must match for --resume to continue a LocoGen run.
LOCOGEN_KEYS = ("method", "target", "window_spec", "max_window", "cross_attention")


def parse_window(text: str | int) -> int | str:
    """--window: a positive integer m, or "auto" (every m from 1 to --max-window)."""
    if isinstance(text, int) or str(text).strip().lower() == "auto":
        return text if isinstance(text, int) else "auto"
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(
            f"--window {text!r} is not a number of layers; give a positive integer m (e.g. 1) or auto"
        ) from None


@dataclass
class LocoGenSettings:
    """How windows are chosen and scored (CLI: `locedit locogen` flags)."""

    # m consecutive cross-attention layers fed the altered prompt, or "auto": every m from 1 to
    # max_window, and the report picks the smallest m whose best window reaches `threshold` (the paper's rule).
    window: int | str = option(
        "auto", parse=parse_window, metavar="M|auto", help="cross-attention layers per window, or auto"
    )
    # --window auto: the largest m tried; None = every m up to the number of cross-attention layers.
    max_window: int | None = option(
        None, parse=int, shown="all layers", help="with --window auto: the largest window size tried"
    )
    # Mean effect the best window of size m must reach for --window auto to pick m: half the clean ->
    # altered score change (the paper picks the smallest window that changes the attribute visibly).
    threshold: float = option(
        0.5, parse=float, help="with --window auto: mean effect (share of the clean->altered change) m must reach"
    )
    # What images are scored for: the probe ("original": style/object, lowered) or the altered prompt (facts).
    target: str = option(
        "original", choices=TARGETS, help="score for the probe (original) or for the altered prompt (altered, facts)"
    )

    def __post_init__(self):
        require(self, "window", self.window == "auto" or is_int(self.window, 1), "a positive integer or auto")
        require(self, "max_window", self.max_window is None or is_int(self.max_window, 1), "a positive integer")
        require(self, "threshold", is_number(self.threshold), "a number (a share of the clean->altered change)")
        require_choice(self, "target", TARGETS)

    def sizes(self, layers: int) -> list[int]:
        """The window sizes m of a run over `layers` cross-attention layers; InvalidInputError when too large."""
        if self.window != "auto":
            if self.window > layers:
                raise InvalidInputError(
                    f"--window {self.window} is larger than the model's {layers} cross-attention layers; "
                    f"give 1..{layers} or auto"
                )
            return [self.window]
        top = layers if self.max_window is None else self.max_window
        if top > layers:
            raise InvalidInputError(
                f"--max-window {top} is larger than the model's {layers} cross-attention layers; give 1..{layers}"
            )
        return list(range(1, top + 1))


@dataclass(frozen=True)
class Window:
    """Window (size, start): cross-attention layers start .. start + size − 1, by module name."""

    size: int
    start: int
    layers: tuple[str, ...]


def cross_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Module names of the UNet's cross-attention layers (attn2), in forward order (index = layer index)."""
    return [layer.name for layer in unet_layers(unet) if layer.kind == "attn2"]


def windows(layers: Sequence[str], sizes: Sequence[int]) -> list[Window]:
    """Every window of each size in `sizes` over `layers`, by size then start."""
    return [Window(m, j, tuple(layers[j : j + m])) for m in sizes for j in range(len(layers) - m + 1)]


@dataclass
class LocoUnitResult:
    """Scores and images of one unit: clean, altered and one score per window, in window order.

    images: (2 + windows, 3, H, W) float32 in [0, 1] on CPU, rows as in the module docstring.
    """

    clean: float
    altered: float
    windows: list[float]
    images: torch.Tensor = field(repr=False)


def altered_probe(probe: Probe) -> Probe:
    """The probe the altered prompt's images are scored for (--target altered): its prompt, no value
    (the CLIP scorer reads the altered prompt; the built-in classifier the altered image's value)."""
    return Probe(prompt=probe.altered, subject=probe.altered, attribute=probe.attribute)


class LocoGen:
    """LocoGen on one pipeline with one scorer (see the module docstring).

    Args:
        pipe: a diffusers SD1.x / SD2.x / SDXL pipeline.
        scorer: scores images for a probe (locedit.scorers).
        generation: steps, guidance, image size (shared with tracing).
        settings: window sizes, threshold, target.
    """

    def __init__(
        self,
        pipe,
        scorer: Scorer,
        generation: GenerationSettings | None = None,
        settings: LocoGenSettings | None = None,
    ):
        self.tracer = Tracer(pipe, scorer, generation)  # prompt encoding and the lockstep denoising loop
        self.pipe = pipe
        self.scorer = scorer
        self.settings = settings or LocoGenSettings()
        self.layers = cross_attention_layers(pipe.unet)
        if not self.layers:
            raise InvalidInputError("this UNet has no cross-attention (attn2) layers; LocoGen needs some")
        self._modules = dict(pipe.unet.named_modules())

    @property
    def family(self):
        return self.tracer.family

    def windows(self) -> list[Window]:
        """The run's windows (InvalidInputError when --window exceeds the layer count)."""
        return windows(self.layers, self.settings.sizes(len(self.layers)))

    def window_of(self, indices: Sequence[int]) -> Window:
        """A window of arbitrary layer indices (checked against the layer count)."""
        for i in indices:
            if not is_int(i, 0) or i >= len(self.layers):
                raise InvalidInputError(
                    f"cross-attention layer index {i} is out of range; this model has {len(self.layers)} "
                    f"(indices 0..{len(self.layers) - 1})"
                )
        return Window(len(indices), min(indices, default=0), tuple(self.layers[i] for i in indices))

    @torch.no_grad()
    def encode(self, probe: Probe, rows: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pipeline keyword arguments of `rows` rows (row 1 the altered prompt's, the rest the
        original's) and the altered prompt's embeddings (1, T, D) that windows feed to to_k/to_v."""
        embeds = self.tracer.encode(probe, rows, None)
        other = self.tracer.encode(Probe(probe.altered, probe.altered, probe.attribute), 1, None)
        if rows > 1:
            for key in ("prompt_embeds", "pooled_prompt_embeds"):
                if key in embeds:
                    embeds[key][1] = other[key][0]
        return embeds, other["prompt_embeds"][:1]

    @torch.no_grad()
    def generate(self, probe: Probe, seed: int, wins: Sequence[Window]) -> torch.Tensor:
        """Images (2 + windows, 3, H, W) of one denoising loop, rows as in the module docstring."""
        rows = 2 + len(wins)
        embeds, altered = self.encode(probe, rows)
        cfg = self.tracer.generation.guidance > 1.0
        total = 2 * rows if cfg else rows
        cond = rows if cfg else 0  # offset of the conditional half in the UNet batch
        fed: dict[str, list[int]] = {}
        for j, win in enumerate(wins):
            for name in win.layers:
                fed.setdefault(name, []).append(cond + 2 + j)
        handles = []
        try:
            for name, batch_rows in fed.items():
                hook = _feed_altered(torch.tensor(batch_rows), altered, total, name)
                handles.append(self._modules[name].register_forward_pre_hook(hook, with_kwargs=True))
            return self.tracer.generate(embeds, seed)
        finally:
            for handle in handles:
                handle.remove()

    def run_unit(self, probe: Probe, seed: int, wins: Sequence[Window]) -> LocoUnitResult:
        """Generate and score one unit: clean, altered and one row per window."""
        images = self.generate(probe, seed, wins)
        if self.settings.target == "altered":
            scores = self.scorer.score(images, altered_probe(probe), images[1]).tolist()
        else:
            scores = self.scorer.score(images, probe, images[0]).tolist()
        return LocoUnitResult(clean=scores[0], altered=scores[1], windows=scores[2:], images=images)

    def changed(self, clean: float, altered: float) -> bool:
        """Whether the altered prompt moved the score by at least the scorer's min_drop, the expected way."""
        move = (altered - clean) if self.settings.target == "altered" else (clean - altered)
        return move >= self.scorer.min_drop and move > 0


def _feed_altered(rows: torch.Tensor, altered: torch.Tensor, total: int, name: str):
    """Forward pre-hook of a cross-attention module: its encoder_hidden_states (the input of to_k and
    to_v) take `altered` (1, T, D) in UNet-batch `rows`."""

    def hook(module, args, kwargs):
        states = kwargs.get("encoder_hidden_states")
        if states is None:
            raise RuntimeError(f"cross-attention {name} was called without encoder_hidden_states")
        if states.shape[0] != total:
            raise RuntimeError(f"cross-attention {name} saw batch {states.shape[0]}, expected {total}")
        states = states.clone()
        states[rows.to(states.device)] = altered.to(states.device, states.dtype)
        return args, {**kwargs, "encoder_hidden_states": states}

    return hook


# --------------------------------------------------------------------------------------- runs
@dataclass
class LocoGenRequest:
    """Everything `locedit locogen` takes (the CLI builds its flags from this class,
    GenerationSettings and LocoGenSettings)."""

    model: str  # local diffusers folder or builtin:NAME (CLI: MODEL)
    out: str  # run directory (CLI: --out RUNDIR)
    # Probes with an "altered" prompt each (JSONL: {prompt, subject, attribute, value?, altered}), or "default":
    # the model folder's locedit_probes.jsonl (the built-in models ship one with altered prompts).
    probes: str = option(
        "default",
        help="probe JSONL file (every record needs an 'altered' prompt) or 'default': the model folder's "
        "locedit_probes.jsonl",
    )
    # Initial-latent seeds; more seeds average out one image's luck.
    seeds: list[int] = option(default_factory=lambda: [0], parse=parse_seeds, help="comma-separated seeds, e.g. 0,1")
    # Windows per denoising loop (plus the clean and altered rows): memory grows with it.
    batch: int = option(8, parse=int, help="windows per denoising loop")
    # How images are scored: clip:PATH, builtin[:WORLD|:PATH], or pixel (similarity to the clean image).
    scorer: str = option("pixel", help="clip:PATH (local CLIP folder), pixel, or builtin[:shapes|scenes|PATH]")
    save_images: bool = option(False, action="flag", help="write PNGs of every generation")
    resume: bool = option(False, action="flag", help="continue the run in RUNDIR, skipping finished windows")
    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    settings: LocoGenSettings = field(default_factory=LocoGenSettings)

    def __post_init__(self):
        require(
            self,
            "probes",
            bool(self.probes),
            "a probe JSONL file whose records each have an 'altered' prompt, or default",
        )
        require(self, "batch", is_int(self.batch, 1), "a positive integer")
        if isinstance(self.seeds, tuple):
            self.seeds = list(self.seeds)
        ok = isinstance(self.seeds, list) and bool(self.seeds) and all(is_int(s, 0) for s in self.seeds)
        require(self, "seeds", ok, "non-negative integers, e.g. 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise InvalidInputError(f"--seeds repeats a seed ({self.seeds!r}); give each seed once")


@dataclass
class LocoGenPlan:
    """A validated request: the engine, probes, windows, units and the config to store."""

    request: LocoGenRequest
    engine: LocoGen
    probes: list[Probe]
    windows: list[Window]
    units: list[Unit]
    config: dict


def plan_locogen(req: LocoGenRequest, pipe=None, local_rank: int = 0) -> LocoGenPlan:
    """Validate `req` and build its plan; writes nothing. `pipe` skips loading the model."""
    from locedit.models import load_pipeline, parse_dtype
    from locedit.probes import DEFAULT_PROBES, MODEL_PROBES_FILE, check_altered, load_probes, validate_probes
    from locedit.scorers import check_scorer_spec, make_scorer

    source = probe_file(req.probes, req.model)
    if str(req.probes) == "default" and source == DEFAULT_PROBES:
        raise InvalidInputError(
            f"--probes default: {req.model} has no {MODEL_PROBES_FILE} of its own, and locedit's generic SD probes "
            "have no 'altered' prompts; give --probes FILE whose records each have an 'altered' prompt"
        )
    probes = load_probes(source)
    check_altered(probes)
    check_scorer_spec(req.scorer)
    device = _device(req.device, local_rank)
    dtype = parse_dtype(req.dtype)
    if pipe is None:
        pipe = load_pipeline(req.model, device=device, dtype=dtype)
    engine = LocoGen(pipe, make_scorer(req.scorer, device), req.generation, req.settings)
    wins = engine.windows()
    validate_probes(probes, [h.tokenizer for h in engine.tracer.handles])
    units = plan_units(probes, req.seeds, lambda pi: wins, req.batch)
    config = _run_config(req, engine, source, probes, wins, units)
    return LocoGenPlan(request=req, engine=engine, probes=probes, windows=wins, units=units, config=config)


def _run_config(
    req: LocoGenRequest, engine: LocoGen, source: Path, probes: list[Probe], wins: list[Window], units
) -> dict:
    """config.json of a LocoGen run: store.RUN_KEYS (those that apply) and LOCOGEN_KEYS."""
    s = req.settings
    return {
        "method": "locogen",
        "model": str(req.model),
        "family": engine.family.name,
        "component": "locogen",
        "probes_source": str(req.probes),
        "probes_file": str(source.resolve()),  # what "default" resolved to
        "probes": [p.to_dict() for p in probes],
        "seeds": list(req.seeds),
        "layers": None,
        "cross_attention": list(engine.layers),
        "window": [w.size for w in wins],
        "window_spec": s.window,
        "max_window": s.max_window,
        "threshold": s.threshold,
        "target": s.target,
        "steps": req.generation.steps,
        "guidance": req.generation.guidance,
        "batch": req.batch,
        "scorer": engine.scorer.name if req.scorer.startswith("clip:") else req.scorer,
        "min_drop": engine.scorer.min_drop,
        "height": req.generation.height,
        "width": req.generation.width,
        "dtype": req.dtype,
        "cells": len(wins) * len(probes) * len(req.seeds),
        "units": len(units),
        "row_layout": "row 0 clean, row 1 altered, rows 2.. one per window; CFG batch [uncond ; cond]",
    }


def window_record(engine: LocoGen, probes: Sequence[Probe], unit: Unit, j: int, result: LocoUnitResult) -> dict:
    """The record of window `j` of `unit`: the probe, the three scores, the effect and the window's layers."""
    probe = probes[unit.prompt_index]
    win = unit.cells[j]
    return {
        "cell_id": unit.cell_ids()[j],
        "prompt_index": unit.prompt_index,
        **probe.to_dict(),
        "seed": unit.seed,
        "window": win.size,
        "start": win.start,
        "layers": "+".join(win.layers),
        "score_clean": result.clean,
        "score_altered": result.altered,
        "score_window": result.windows[j],
        # Share of the clean -> altered score change this window reproduces (None when they are equal).
        "effect": effect(result.altered, result.clean, result.windows[j]),
        "changed": bool(engine.changed(result.clean, result.altered)),
    }


def execute_locogen(
    engine: LocoGen,
    probes: Sequence[Probe],
    units: Sequence[Unit],
    out: Path,
    save_images: bool = False,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Compute this rank's units (index % world == rank), skipping units whose records all exist.
    Returns the number of units computed."""
    computed = 0
    for index, unit in enumerate(units):
        if index % world != rank:
            continue
        ids = unit.cell_ids()
        missing = [j for j, cid in enumerate(ids) if not has_record(out, cid)]
        if missing:
            result = engine.run_unit(probes[unit.prompt_index], unit.seed, unit.cells)
            if save_images:
                if unit.first == 0:
                    stem = f"P{unit.prompt_index:04d}_S{unit.seed}"
                    save_png(out, f"{stem}_clean", result.images[0])
                    save_png(out, f"{stem}_altered", result.images[1])
                for j in missing:
                    save_png(out, ids[j], result.images[2 + j])
            for j in missing:
                write_record(out, window_record(engine, probes, unit, j, result))
            computed += 1
        if progress is not None:
            progress(len(ids))
    return computed


def write_locogen_results(out: Path, units: Sequence[Unit]) -> Path:
    """results.csv (LOCOGEN_COLUMNS) from the window records, in plan order; raises if one is missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LOCOGEN_COLUMNS)
    missing = []
    for unit in units:
        for cid in unit.cell_ids():
            path = out / "cells" / f"{cid}.json"
            if not path.is_file():
                missing.append(cid)
                continue
            record = json.loads(path.read_text())
            writer.writerow([_csv_value(record.get(col)) for col in LOCOGEN_COLUMNS])
    if missing:
        raise RuntimeError(f"{len(missing)} window record(s) missing in {out} (e.g. {missing[0]}); rerun with --resume")
    target = out / "results.csv"
    with atomic_path(target) as tmp:
        tmp.write_text(buffer.getvalue())
    return target


def _check_resume(out: Path, config: dict, resume: bool) -> None:
    """On --resume, the stored run must be a LocoGen run with the same LOCOGEN_KEYS (store.prepare_run_dir
    checks the rest)."""
    stored_path = out / "config.json"
    if not (resume and stored_path.is_file()):
        return
    stored = json.loads(stored_path.read_text())
    for key in LOCOGEN_KEYS:
        if stored.get(key) != config.get(key):
            raise RunDirError(
                f"--out {str(out)!r} holds a different run ({key} was {stored.get(key)!r}, now {config.get(key)!r}); "
                "resume with the same options or choose a new folder"
            )


def run_locogen(req: LocoGenRequest, pipe=None, quiet: bool = True) -> Path | None:
    """Run (or resume) LocoGen. Under accelerate/torchrun, units are sharded over the processes; every
    rank writes its own records and rank 0 writes results.csv. Returns its path on rank 0."""
    from locedit.models import resolve_device

    rank, world, local_rank, barrier = _distributed(cpu=resolve_device(req.device).type == "cpu")
    plan = plan_locogen(req, pipe=pipe, local_rank=local_rank)
    out = Path(req.out)
    if out.is_file():
        raise RunDirError(f"--out {str(out)!r} is a file; give a folder")
    barrier()
    if rank == 0:
        _check_resume(out, plan.config, req.resume)
        prepare_run_dir(out, plan.config, req.resume, kind="LocoGen run")
    barrier()

    def work(progress: Callable[[int], None] | None) -> None:
        execute_locogen(
            plan.engine,
            plan.probes,
            plan.units,
            out,
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
        "window",
        "locogen",
        work,
        lambda: write_locogen_results(out, plan.units),
    )
