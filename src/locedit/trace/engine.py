"""The lockstep causal-tracing engine: corrupt the subject's token embeddings, restore clean states
(UNet layers or text-encoder states) in batch rows of one denoising loop, and score the images.

Row layout of one unit (a prompt, a seed and up to `batch` cells):

    row 0        clean        (uncorrupted prompt embeddings)
    row 1        corrupted    (noise on the subject's token embeddings)
    row 2 + j    restored_j   (corrupted embeddings; cell j's states copied from row 0)

Every row starts from the same initial latent (drawn once from the seed), so rows differ only by
what tracing does to them. With classifier-free guidance the pipeline runs the UNet on the
concatenation [uncond rows 0..N-1 ; cond rows 0..N-1] (batch 2N): only the conditional branch is
corrupted (the negative-prompt embeddings are clean and shared), and UNet restoration copies the
clean row's output in the conditional half by default (`restore="both"` also in the unconditional
half). Hooks copy activations of the clean row of the *same* forward pass, so no activation is
cached: memory grows with the batch, not with the number of layers or steps.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from locedit.errors import InvalidInputError
from locedit.hooks import Trace
from locedit.models import detect_family, find_subject_span, text_encoders
from locedit.options import is_int, is_number, option, require, require_choice
from locedit.probes import Probe
from locedit.scorers import Scorer
from locedit.trace.layers import TEXT_STATES, UNetCell, unet_layers, window

RESTORE_MODES = ("cond", "both")


@dataclass
class GenerationSettings:
    """How each traced image is generated (CLI: `locedit trace` flags)."""

    # Denoising steps of the pipeline's scheduler (UNet calls may be more); SD's usual 25.
    steps: int = option(25, help="denoising steps", parse=int)
    # Classifier-free guidance scale; <= 1 turns guidance (and the unconditional half) off. SD's usual 7.5.
    guidance: float = option(7.5, help="classifier-free guidance scale", parse=float)
    # Image size in pixels; None = the pipeline's default (UNet sample size × VAE factor).
    height: int | None = option(None, help="image height in pixels", parse=int, shown="the model's")
    width: int | None = option(None, help="image width in pixels", parse=int, shown="the model's")

    def __post_init__(self):
        require(self, "steps", is_int(self.steps, 1), "a positive integer")
        require(self, "guidance", is_number(self.guidance), "a number")
        for name in ("height", "width"):
            require(
                self,
                name,
                getattr(self, name) is None or is_int(getattr(self, name), 1),
                "a positive number of pixels",
                "leave it out for the model's default",
            )


@dataclass
class TraceSettings:
    """How corruption and restoration are done (CLI: `locedit trace` flags). The noise scale and the
    rows per loop belong to the run (TraceRequest.noise, .batch): the engine takes them per call."""

    # UNet restoration in the "cond" half of the CFG batch only (the half the corruption is in), or "both".
    restore: str = option(
        "cond", help="UNet: restore in the conditional CFG half only, or in both halves", choices=RESTORE_MODES
    )
    # Restore k consecutive layers of a kind (UNet) / layers (text) around each one (ROME's window); 1 = single.
    window: int = option(1, help="restore K consecutive layers together", metavar="K", parse=int)
    # clean − corrupted score drop that counts as "corruption destroyed the attribute"; None = the scorer's.
    min_drop: float | None = option(
        None, help="score drop that counts as 'corruption destroyed the attribute'", parse=float, shown="the scorer's"
    )
    # Text encoder: also restore every padding position after EOS together, as one extra token row.
    # The UNet reads all context positions, and causal attention lets padding states carry the subject.
    padding: bool = option(
        True,
        flag="--no-padding",
        action="flag",
        help="text encoder: skip the extra row that restores all padding positions after EOS",
    )

    def __post_init__(self):
        require_choice(self, "restore", RESTORE_MODES)
        require(self, "window", is_int(self.window, 1), "a positive integer")
        require(self, "min_drop", self.min_drop is None or is_number(self.min_drop), "a number")


@dataclass(frozen=True)
class TextCell:
    """One text-encoder cell: restore `state` of `layers` (a window around `layer`) at `token`.

    `encoder` is the 0-based index into the pipeline's text encoders (SDXL has two). `token` is
    the row of the cell in token × layer tables; `positions` are the sequence positions restored:
    (token,) for a prompt token, every position after EOS for the padding row.
    """

    encoder: int
    layer: int
    token: int
    state: str
    layers: tuple[int, ...]
    positions: tuple[int, ...] = ()

    @property
    def restored_positions(self) -> tuple[int, ...]:
        return self.positions or (self.token,)


@dataclass
class UnitResult:
    """Scores (and images) of one lockstep unit.

    Attributes:
        clean, corrupted: scores of rows 0 and 1.
        restored: one score per cell, in cell order.
        images: (2 + cells, 3, H, W) float32 in [0, 1] on CPU, rows as in the module docstring.
    """

    clean: float
    corrupted: float
    restored: list[float]
    images: torch.Tensor = field(repr=False)


def noise_seed(prompt: str, seed: int) -> int:
    """Seed of the corruption noise of (prompt, seed): stable across processes and runs."""
    return zlib.crc32(f"{seed}\x00{prompt}".encode()) & 0x7FFFFFFF


def _patch_rows(output, index: torch.Tensor, batch: int):
    """`output` with rows gathered by `index` (a copy), through nested tuples/lists/ModelOutputs.

    Only tensors whose first dimension is the UNet batch are touched (the down blocks' skip
    states are a tuple inside the output tuple).
    """
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != batch:
            return output
        return output.index_select(0, index.to(output.device))
    if isinstance(output, dict):  # diffusers BaseOutput / transformers ModelOutput
        patched = {k: _patch_rows(v, index, batch) for k, v in output.items()}
        try:
            return type(output)(**patched)
        except TypeError:
            return patched
    if isinstance(output, tuple):
        values = [_patch_rows(v, index, batch) for v in output]
        return type(output)(*values) if hasattr(output, "_fields") else tuple(values)
    if isinstance(output, list):
        return [_patch_rows(v, index, batch) for v in output]
    return output


class Tracer:
    """Causal tracing on one pipeline with one scorer.

    Args:
        pipe: a diffusers SD1.x / SD2.x / SDXL pipeline (see locedit.models).
        scorer: scores images for a probe (locedit.scorers).
        generation, settings: see GenerationSettings and TraceSettings.
    """

    def __init__(
        self, pipe, scorer: Scorer, generation: GenerationSettings | None = None, settings: TraceSettings | None = None
    ):
        self.pipe = pipe
        self.scorer = scorer
        self.generation = generation or GenerationSettings()
        self.settings = settings or TraceSettings()
        self.family = detect_family(pipe)
        self.handles = text_encoders(pipe)
        # Std of each encoder's token-embedding matrix (all entries), measured once: the noise unit.
        self.embedding_std = [float(h.module("token_embedding").weight.detach().float().std()) for h in self.handles]
        self.layers = unet_layers(pipe.unet)
        self._modules = dict(pipe.unet.named_modules())
        self._negative: dict[str, dict[str, torch.Tensor]] = {}
        pipe.set_progress_bar_config(disable=True)

    # ----------------------------------------------------------------------------- prompts
    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    def spans(self, probe: Probe) -> list[tuple[int, int]]:
        """Subject token span [start, end) per text encoder (positions count BOS)."""
        return [find_subject_span(h.tokenizer, probe.prompt, probe.subject) for h in self.handles]

    def num_tokens(self, probe: Probe, encoder: int = 0) -> int:
        """Tokens of the prompt including BOS and EOS (the positions text tracing visits)."""
        return len(self.handles[encoder].tokenizer(probe.prompt, truncation=False).input_ids)

    def noise(self, probe: Probe, seed: int, noise: float) -> list[torch.Tensor]:
        """Corruption noise per encoder, (span, hidden) float32: N(0, (noise·std)²), seeded by noise_seed;
        `noise` is the noise scale in token-embedding stds (--noise)."""
        gen = torch.Generator().manual_seed(noise_seed(probe.prompt, seed))
        out = []
        for handle, (start, end), std in zip(self.handles, self.spans(probe), self.embedding_std):
            hidden = handle.module("token_embedding").weight.shape[1]
            out.append(torch.randn(end - start, hidden, generator=gen) * (noise * std))
        return out

    def _negative_embeds(self, prompt: str) -> dict[str, torch.Tensor]:
        """The pipeline's own negative-prompt embeddings (1 row), as it would compute them."""
        if prompt not in self._negative:
            with torch.no_grad():
                if self.family.name == "sdxl":
                    _, neg, _, neg_pooled = self.pipe.encode_prompt(
                        prompt=prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True
                    )
                    self._negative[prompt] = {
                        "negative_prompt_embeds": neg,
                        "negative_pooled_prompt_embeds": neg_pooled,
                    }
                else:
                    _, neg = self.pipe.encode_prompt(
                        prompt=prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True
                    )
                    self._negative[prompt] = {"negative_prompt_embeds": neg}
        return self._negative[prompt]

    @torch.no_grad()
    def encode(
        self, probe: Probe, rows: int, noise: list[torch.Tensor] | None, text_cells: Sequence[TextCell] = ()
    ) -> dict[str, torch.Tensor]:
        """Pipeline keyword arguments with `rows` prompt embeddings of `probe`.

        Row 0 is clean; rows 1.. get `noise` added to the subject's token embeddings; row 2 + j
        additionally has text cell j's clean states restored. Returns prompt_embeds (rows, T, D),
        negative_prompt_embeds (rows, T, D) and, for SDXL, the pooled embeddings (rows, D').
        """
        traces = []
        try:
            if noise is not None:
                for handle, (start, end), eps in zip(self.handles, self.spans(probe), noise):
                    traces.append(
                        Trace(
                            handle.module("token_embedding"),
                            retain_output=False,
                            edit_output=_add_noise(start, end, eps),
                        )
                    )
            for module, pairs in self._text_restores(text_cells).items():
                traces.append(Trace(module, retain_output=False, edit_output=_restore_tokens(pairs)))
            if self.family.name == "sdxl":
                embeds, _, pooled, _ = self.pipe.encode_prompt(
                    prompt=[probe.prompt] * rows,
                    device=self.device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=False,
                )
                out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
            else:
                embeds, _ = self.pipe.encode_prompt(
                    prompt=[probe.prompt] * rows,
                    device=self.device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=False,
                )
                out = {"prompt_embeds": embeds}
        finally:
            for trace in traces:
                trace.close()
        for key, value in self._negative_embeds(probe.prompt).items():
            out[key] = value.expand(rows, *value.shape[1:]).clone()
        return out

    def _text_restores(self, cells: Sequence[TextCell]) -> dict[torch.nn.Module, list[tuple[int, int]]]:
        """Module -> (row, token) pairs whose output is replaced by row 0's."""
        restores: dict[torch.nn.Module, list[tuple[int, int]]] = {}
        for j, cell in enumerate(cells):
            handle = self.handles[cell.encoder]
            for layer in cell.layers:
                module = handle.module(TEXT_STATES[cell.state], layer)
                restores.setdefault(module, []).extend((2 + j, t) for t in cell.restored_positions)
        return restores

    # ----------------------------------------------------------------------------- generation
    def initial_latent(self, seed: int) -> torch.Tensor:
        """The seed's initial latent (1, C, h, w), float32 on CPU, shared by every row."""
        pipe = self.pipe
        height = self.generation.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
        width = self.generation.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
        shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def generate(
        self, embeds: dict[str, torch.Tensor], seed: int, unet_restores: Sequence[Sequence[str]] = ()
    ) -> torch.Tensor:
        """Images (rows, 3, H, W) float32 in [0, 1] on CPU from one denoising loop.

        `unet_restores[j]` lists the UNet modules whose output row 2 + j takes from row 0 at
        every UNet call (conditional half; both halves with restore="both").
        """
        rows = embeds["prompt_embeds"].shape[0]
        cfg = self.generation.guidance > 1.0
        total = 2 * rows if cfg else rows
        cond = rows if cfg else 0  # offset of the conditional half in the UNet batch
        index_of: dict[str, torch.Tensor] = {}
        for j, names in enumerate(unet_restores):
            for name in names:
                index = index_of.setdefault(name, torch.arange(total))
                index[cond + 2 + j] = cond
                if cfg and self.settings.restore == "both":
                    index[2 + j] = 0
        traces = []
        try:
            for name, index in index_of.items():
                if name not in self._modules:
                    raise InvalidInputError(f"UNet has no module {name!r}")
                traces.append(
                    Trace(self._modules[name], retain_output=False, edit_output=_row_copier(index, total, name))
                )
            latents = self.initial_latent(seed).expand(rows, -1, -1, -1).to(self.device, self.dtype)
            kwargs = dict(embeds)
            if not cfg:
                kwargs = {k: v for k, v in kwargs.items() if not k.startswith("negative_")}
            images = self.pipe(
                **kwargs,
                latents=latents.clone(),
                num_inference_steps=self.generation.steps,
                guidance_scale=self.generation.guidance,
                height=self.generation.height,
                width=self.generation.width,
                output_type="pt",
            ).images
        finally:
            for trace in traces:
                trace.close()
        return images.detach().float().cpu()

    # ----------------------------------------------------------------------------- units
    def _score(self, probe: Probe, images: torch.Tensor, n_cells: int) -> UnitResult:
        scores = self.scorer.score(images, probe, images[0]).tolist()
        return UnitResult(clean=scores[0], corrupted=scores[1], restored=scores[2 : 2 + n_cells], images=images)

    def run_unet_unit(self, probe: Probe, seed: int, noise: float, cells: Sequence[UNetCell]) -> UnitResult:
        """One lockstep loop: clean, corrupted and one restored row per UNet cell."""
        embeds = self.encode(probe, 2 + len(cells), self.noise(probe, seed, noise))
        images = self.generate(embeds, seed, [cell.modules for cell in cells])
        return self._score(probe, images, len(cells))

    def run_text_unit(self, probe: Probe, seed: int, noise: float, cells: Sequence[TextCell]) -> UnitResult:
        """One lockstep loop: clean, corrupted and one row per text cell (its states restored)."""
        embeds = self.encode(probe, 2 + len(cells), self.noise(probe, seed, noise), cells)
        images = self.generate(embeds, seed)
        return self._score(probe, images, len(cells))

    def baseline(self, probe: Probe, seed: int, noise: float) -> UnitResult:
        """Clean and corrupted rows only."""
        return self.run_unet_unit(probe, seed, noise, [])

    def destroyed(self, clean: float, corrupted: float) -> bool:
        return self.scorer.destroyed(clean, corrupted, self.settings.min_drop)

    def padding_positions(self, probe: Probe, encoder: int = 0) -> tuple[int, ...]:
        """Positions after EOS (padding) that the padding row restores; () when it is off or none."""
        if not self.settings.padding:
            return ()
        return tuple(range(self.num_tokens(probe, encoder), self.handles[encoder].context_length))

    def text_cells(self, probe: Probe, states: Sequence[str], window_size: int | None = None) -> list[TextCell]:
        """Every (encoder, layer, token, state) cell of `probe`: tokens BOS..EOS (plus one padding
        row restoring all positions after EOS, see TraceSettings.padding), all layers."""
        k = window_size or self.settings.window
        cells = []
        for e, handle in enumerate(self.handles):
            n_layers = handle.num_layers
            n_tok = self.num_tokens(probe, e)
            rows = [(t, ()) for t in range(n_tok)]
            if self.padding_positions(probe, e):
                rows.append((n_tok, self.padding_positions(probe, e)))
            for state in states:
                for token, positions in rows:
                    for layer in range(n_layers):
                        layers = tuple(window(list(range(n_layers)), layer, k)) if k > 1 else (layer,)
                        cells.append(
                            TextCell(
                                encoder=e, layer=layer, token=token, state=state, layers=layers, positions=positions
                            )
                        )
        return cells


def effect(clean: float, corrupted: float, restored: float) -> float | None:
    """Normalized indirect effect (restored − corrupted) / (clean − corrupted); None if undefined."""
    denom = clean - corrupted
    if denom == 0 or denom != denom:
        return None
    return (restored - corrupted) / denom


def _add_noise(start: int, end: int, eps: torch.Tensor):
    """Edit for the token embedding: add `eps` (span, hidden) at [start, end) of rows 1.."""

    def edit(output, module):
        out = output.clone()
        out[1:, start:end] += eps.to(out.device, out.dtype)
        return out

    return edit


def _restore_tokens(pairs: list[tuple[int, int]]):
    """Edit for a text-encoder module: copy row 0's output at token t into row r, for (r, t) in pairs."""
    rows = torch.tensor([r for r, _ in pairs])
    toks = torch.tensor([t for _, t in pairs])

    def edit(output, module):
        main = output[0] if isinstance(output, tuple) else output
        patched = main.clone()
        patched[rows, toks] = main[torch.zeros_like(rows), toks]
        if isinstance(output, tuple):
            return (patched, *output[1:])
        return patched

    return edit


def _row_copier(index: torch.Tensor, total: int, name: str):
    """Edit for a UNet module: gather rows by `index` in every batch-sized tensor of its output."""

    def edit(output, module):
        first = output
        while isinstance(first, (tuple, list)) and first:
            first = first[0]
        if isinstance(first, torch.Tensor) and first.dim() and first.shape[0] != total:
            raise RuntimeError(f"UNet module {name} saw batch {first.shape[0]}, expected {total}")
        return _patch_rows(output, index, total)

    return edit


def calibrate_noise(
    tracer: Tracer,
    probes: Sequence[Probe],
    seeds: Sequence[int],
    target: float = 0.8,
    schedule: Sequence[float] = (3.0, 5.0, 8.0, 12.0, 20.0, 32.0, 64.0),
) -> tuple[float, float]:
    """`--noise auto`: the first noise scale of `schedule` at which at least `target` of (probe, seed)
    pairs are destroyed (clean − corrupted >= the scorer's min_drop). Returns (noise scale, fraction
    destroyed); if no scale reaches the target, the last one.
    """
    fraction = 0.0
    for noise in schedule:
        hits = 0
        for probe in probes:
            for seed in seeds:
                base = tracer.baseline(probe, seed, noise)
                hits += tracer.destroyed(base.clean, base.corrupted)
        fraction = hits / max(1, len(probes) * len(seeds))
        if fraction >= target:
            return float(noise), fraction
    return float(schedule[-1]), fraction
