"""Image scorers for causal tracing: one interface, a registry, and the `clip:PATH`, `pixel` and
`builtin` scorers.

A scorer maps a batch of generated images and the probe they were generated for to one number per
image, higher = more of the probed attribute. Tracing compares the restored images' scores with the
clean and corrupted ones, so only differences of scores matter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from locedit.errors import LoceditError
from locedit.probes import Probe


class ScorerError(LoceditError, ValueError):
    """Unknown scorer, or a scorer that cannot be loaded (path missing, component absent)."""


class Scorer:
    """Base class. Subclasses set `name`, `min_drop` and implement `score`.

    Attributes:
        name: spec the scorer was made from (recorded in the run's config).
        min_drop: default smallest clean − corrupted score drop that counts as "the corruption
            destroyed the attribute"; prompts with a smaller drop are flagged and kept out of averages.
    """

    name: str = "scorer"
    min_drop: float = 0.0

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        """Scores (N,) float64 of `images` (N, 3, H, W), RGB in [0, 1].

        `reference` (3, H, W) is the clean generation of the same prompt and seed.
        """
        raise NotImplementedError

    def destroyed(self, clean: float, corrupted: float, min_drop: float | None = None) -> bool:
        """Whether corruption moved the score down by at least `min_drop` (default: the scorer's)."""
        threshold = self.min_drop if min_drop is None else min_drop
        return (clean - corrupted) >= threshold and clean != corrupted


class PixelScorer(Scorer):
    """Model-free: 1 − mean absolute pixel difference to the clean image (in [0, 1]; clean = 1).

    For models without any attribute scorer: the normalized effect then measures how much of the
    corruption's visible change a restoration undoes.
    """

    name = "pixel"
    min_drop = 0.01  # one percent of the pixel range, on average over all pixels

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        x = images.detach().to(torch.float64)
        ref = reference.detach().to(torch.float64)
        return 1.0 - (x - ref[None]).abs().flatten(1).mean(1)


# OpenAI CLIP's image normalisation, used when the folder has no preprocessor_config.json.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer(Scorer):
    """CLIP-Score: 100 × cosine(image embedding, text embedding of the probe's target text).

    Uses a local transformers CLIP folder (CLIPModel weights + tokenizer files); never a hub name.
    Not clamped at 0 (unlike Hessel et al.), so that small differences stay visible.
    """

    min_drop = 1.0  # CLIP-Score points (0.01 cosine)

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        import json

        from transformers import CLIPModel, CLIPTokenizer

        folder = Path(path).expanduser()
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ScorerError(
                f"CLIP scorer folder {str(folder)!r} not found or has no config.json; give "
                "--scorer clip:PATH with a local transformers CLIP folder (or use --scorer pixel)"
            )
        self.name = f"clip:{folder}"
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        mean, std = _CLIP_MEAN, _CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _text(self, text: str) -> torch.Tensor:
        if text not in self._text_cache:
            ids = self.tokenizer([text], padding="max_length", truncation=True, return_tensors="pt").to(self.device)
            emb = self.model.get_text_features(**ids)
            emb = getattr(emb, "pooler_output", emb)  # transformers 5 may return an output object
            self._text_cache[text] = torch.nn.functional.normalize(emb.float(), dim=-1)[0]
        return self._text_cache[text]

    @torch.no_grad()
    def score_texts(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CLIP-Scores (N, T) float64 of `images` (N, 3, H, W) in [0, 1] against each of `texts`."""
        x = images.detach().float().cpu()
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        x = ((x.clamp(0, 1) - self.mean) / self.std).to(self.device, self.model.dtype)
        emb = self.model.get_image_features(pixel_values=x)
        emb = getattr(emb, "pooler_output", emb)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        text = torch.stack([self._text(t) for t in texts])  # (T, D)
        return (100.0 * emb @ text.T).double().cpu()

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        return self.score_texts(images, [probe.target_text])[:, 0]


# Probe attribute -> classifier attribute of the built-in shapes world.
_BUILTIN_ATTRIBUTES = {"color": "colour", "object": "shape"}


class BuiltinScorer(Scorer):
    """The built-in shapes model's classifier: 1 when the image shows the probe's attribute value.

    The value is the probe's `value`, or else what the classifier sees in the clean image.
    """

    name = "builtin"
    min_drop = 0.5  # the label must flip

    def __init__(self):
        try:
            from locedit.builtin.classifier import ShapesClassifier
        except ImportError as err:
            raise ScorerError(
                f"--scorer builtin needs locedit.builtin.classifier.ShapesClassifier, which is not available "
                f"({err}); use --scorer pixel or clip:PATH"
            ) from None
        self.classifier = ShapesClassifier.load()

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        attribute = _BUILTIN_ATTRIBUTES.get(probe.attribute, probe.attribute)
        preds = self.classifier.predict(images.detach().float().cpu())
        if preds and attribute not in preds[0]:
            raise ScorerError(
                f"the built-in classifier has no attribute {probe.attribute!r} (it knows {', '.join(preds[0])})"
            )
        target = probe.value or self.classifier.predict(reference[None].detach().float().cpu())[0][attribute]
        return torch.tensor([1.0 if p[attribute] == target else 0.0 for p in preds], dtype=torch.float64)


# Scorer registry: name -> factory(argument after the colon or None, device) -> Scorer.
SCORERS: dict[str, Callable[[str | None, torch.device | str], Scorer]] = {}


def register_scorer(name: str, factory: Callable[[str | None, torch.device | str], Scorer]) -> None:
    """Make `--scorer NAME[:ARG]` build `factory(ARG, device)`."""
    SCORERS[name] = factory


def _needs_no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise ScorerError(f"scorer {name!r} takes no argument (got {name}:{arg})")


def _pixel(arg, device):
    _needs_no_arg("pixel", arg)
    return PixelScorer()


def _clip(arg, device):
    if not arg:
        raise ScorerError("--scorer clip needs a folder: clip:PATH (a local transformers CLIP model)")
    return ClipScorer(arg, device)


def _builtin(arg, device):
    _needs_no_arg("builtin", arg)
    return BuiltinScorer()


register_scorer("pixel", _pixel)
register_scorer("clip", _clip)
register_scorer("builtin", _builtin)


def check_scorer_spec(spec: str) -> None:
    """Cheap validation of a --scorer spec without loading anything (raises ScorerError)."""
    name, _, arg = spec.partition(":")
    if name not in SCORERS:
        raise ScorerError(f"unknown scorer {spec!r}; use one of: clip:PATH, " + ", ".join(n for n in SCORERS if n != "clip"))
    if name == "clip":
        folder = Path(arg).expanduser() if arg else None
        if folder is None or not (folder / "config.json").is_file():
            raise ScorerError(
                f"CLIP scorer folder {arg!r} not found or has no config.json; give --scorer clip:PATH "
                "with a local transformers CLIP folder (or use --scorer pixel)"
            )


def make_scorer(spec: str | Scorer, device: torch.device | str = "cpu") -> Scorer:
    """A scorer from its spec: "pixel", "clip:PATH", "builtin", or any registered name."""
    if isinstance(spec, Scorer):
        return spec
    check_scorer_spec(spec)
    name, _, arg = spec.partition(":")
    return SCORERS[name](arg or None, device)
