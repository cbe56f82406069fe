"""Classifier of a built-in world: per-attribute labels and probabilities for (generated) images.

Colour is read by a hue rule on the object's saturated pixels (the background is grey); shape,
style (background texture), size and (in worlds with positions) position by a small CNN trained on
world images (``train.py --stage classifier``). The shapes world's weights ship as
``classifier.safetensors`` next to this file; other worlds' beside their model folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from locedit.builtin import world

WEIGHTS = Path(__file__).with_name("classifier.safetensors")  # the shapes world's classifier
# degrees; softness of the colour probabilities around each colour's hue: 15, or 0.3 × the world's closest
# pair of hues when that is smaller (the scenes world's red/orange/yellow are 25–28° apart)
_HUE_SIGMA = 15.0


def hue_sigma(w: world.World) -> float:
    """Softness (degrees) of world ``w``'s colour probabilities."""
    hues = sorted(w.colour_hue.values())
    gaps = [b - a for a, b in zip(hues, hues[1:])] + [360.0 - hues[-1] + hues[0]]
    return min(_HUE_SIGMA, 0.3 * min(gaps))


def heads(w: world.World = world.SHAPES_WORLD) -> dict[str, tuple[str, ...]]:
    """The CNN's heads of world ``w``: attribute -> ordered label values."""
    out = {"shape": w.shapes, "style": w.styles, "size": w.sizes}
    if w.positions:
        out["position"] = w.positions
    return out


#: the shapes world's CNN heads and every attribute its predict() returns.
HEADS: dict[str, tuple[str, ...]] = heads()
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "style", "size")


class ShapesCNN(nn.Module):
    """(B,3,S,S) in [0,1] -> {attribute: logits (B, n_values)} for the world's CNN heads (S = image size)."""

    def __init__(self, w: world.World = world.SHAPES_WORLD):
        super().__init__()
        cells = (w.image_size // 8) ** 2  # after three 2× poolings
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16×16
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8×8
            nn.Conv2d(64, 96, 3, padding=1),
            nn.BatchNorm2d(96),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4×4
            nn.Flatten(),
            nn.Linear(96 * cells, 128),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict({attr: nn.Linear(128, len(vals)) for attr, vals in heads(w).items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x * 2.0 - 1.0)
        return {attr: head(h) for attr, head in self.heads.items()}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation mimicking decoder artefacts: random blur, noise, brightness; (B,3,H,W) in [0,1]."""
    b = x.shape[0]
    box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    alpha = torch.rand(b, 1, 1, 1, generator=gen) * 0.7 * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    x = (1 - alpha) * x + alpha * box
    x = x * (1 + 0.08 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5))
    x = x + 0.03 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def to_tensor(images, size: int = world.IMAGE_SIZE) -> torch.Tensor:
    """PIL image(s), uint8 array(s) HxWx3 / BxHxWx3, or a float tensor (B,3,H,W) in [0,1] -> (B,3,size,size) float."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        if x.ndim == 3:
            x = x[None]
    else:
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)):
            images = [images]
        arrays = [np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images]
        x = torch.from_numpy(np.stack(arrays).astype(np.float32))
        if x.ndim == 4 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        if x.max() > 1.5:
            x = x / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.clamp(0, 1)


def colour_probabilities(x: torch.Tensor, w: world.World = world.SHAPES_WORLD) -> torch.Tensor:
    """Hue rule: (B,3,H,W) in [0,1] -> probabilities (B, len(w.colours)) from the object's mean hue."""
    mx, _ = x.max(dim=1)
    mn, _ = x.min(dim=1)
    sat = (mx - mn) / (mx + 1e-6)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    # hue angle from the standard RGB -> (cos, sin) projection (same ordering as HSV hue)
    hx = r - 0.5 * (g + b)
    hy = (math.sqrt(3) / 2) * (g - b)
    # object colours all have saturation >= 0.75 (the background is grey): keep clearly saturated
    # pixels, weighted by saturation squared so that faint colour fringes count little
    weight = (sat > 0.5).float() * (mx > 0.2).float() * sat**2
    empty = weight.flatten(1).sum(1) < 1e-3
    if empty.any():  # no saturated pixels: use the most saturated 5% instead
        k = max(1, int(0.05 * sat[0].numel()))
        thresh = sat.flatten(1).topk(k, dim=1).values[:, -1]
        fallback = (sat >= thresh[:, None, None]).float() * sat
        weight = torch.where(empty[:, None, None], fallback, weight)
    norm = torch.sqrt(hx**2 + hy**2) + 1e-6
    cx = (weight * hx / norm).flatten(1).sum(1)
    cy = (weight * hy / norm).flatten(1).sum(1)
    hue = torch.rad2deg(torch.atan2(cy, cx)) % 360.0
    centres = torch.tensor([w.colour_hue[c] for c in w.colours])
    d = (hue[:, None] - centres[None, :] + 180.0) % 360.0 - 180.0
    return torch.softmax(-0.5 * (d / hue_sigma(w)) ** 2, dim=1)


class ShapesClassifier:
    """Per-attribute predictions (colour, shape, style, size[, position]) for images of a world."""

    def __init__(self, net: ShapesCNN, w: world.World = world.SHAPES_WORLD):
        self.net = net.eval()
        self.world = w
        self.values: dict[str, tuple[str, ...]] = {"colour": w.colours, **heads(w)}  # attribute -> label order

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every attribute predict() returns."""
        return tuple(self.values)

    @classmethod
    def load(cls, path: str | Path | None = None, w: world.World = world.SHAPES_WORLD) -> ShapesClassifier:
        """The shipped shapes-world classifier, or the safetensors at ``path`` for world ``w``."""
        net = ShapesCNN(w)
        net.load_state_dict(load_file(str(path or WEIGHTS)))
        return cls(net, w)

    @torch.no_grad()
    def predict_proba(self, images) -> dict[str, torch.Tensor]:
        """{attribute: probabilities (B, n_values)}, value order as in ``self.values``."""
        x = to_tensor(images, self.world.image_size)
        logits = self.net(x)
        out = {"colour": colour_probabilities(x, self.world)}
        out.update({attr: torch.softmax(logits[attr], dim=1) for attr in logits})
        return out

    def predict(self, images) -> list[dict[str, str]]:
        """One {attribute: label} per image, for every attribute of the world."""
        probs = self.predict_proba(images)
        idx = {attr: p.argmax(dim=1).tolist() for attr, p in probs.items()}
        n = len(idx["colour"])
        return [{attr: self.values[attr][idx[attr][i]] for attr in self.values} for i in range(n)]

    @torch.no_grad()
    def accuracy_on_world(self, n: int = 500, seed: int = 0, vae=None) -> dict[str, float]:
        """Per-attribute accuracy on ``n`` freshly drawn images of all combinations (optionally VAE-reconstructed)."""
        rng = np.random.default_rng(seed)
        records = [self.world.sample(rng, held_out=rng.random() < 0.12) for _ in range(n)]
        x = torch.from_numpy(self.world.render_batch(records))
        if vae is not None:
            rec = vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample
            x = ((rec + 1) / 2).clamp(0, 1)
        preds = self.predict(x)
        return {
            f"acc_{a}": float(np.mean([p[a] == r.attributes[a] for p, r in zip(preds, records)])) for a in self.values
        }
