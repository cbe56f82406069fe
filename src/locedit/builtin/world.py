"""The shapes world: procedurally drawn 32×32 images with known attributes, and their captions.

One object (shape, colour, size) drawn on a grey textured background (the *style*). Styles are
also reachable through named, two-word fictional artists ("in the style of karl brenner"), and a
few named entities ("the flag of veloria", "the zentek logo") are bound to fixed attribute
combinations. Captions come from templates; some templates (paraphrases) and some colour–shape
pairs (compositions) are held out of training. Everything is deterministic given a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from locedit.errors import InvalidInputError

IMAGE_SIZE = 32  # pixels per side of a rendered image
_SUPERSAMPLE = 4  # shapes are drawn at 4× resolution, then box-downsampled (anti-aliasing)

# ---------------------------------------------------------------- attribute vocabularies
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: tuple[str, ...] = ("red", "yellow", "green", "blue", "purple")
STYLES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
SIZES: tuple[str, ...] = ("small", "medium", "large")

#: RGB (0..255) of each colour; every rendered object jitters around it.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (230, 205, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "purple": (150, 50, 205),
}
#: hue (degrees, HSV) of each colour, used by the classifier's hue rule.
COLOUR_HUE: dict[str, float] = {"red": 0.0, "yellow": 53.0, "green": 128.0, "blue": 226.0, "purple": 280.0}

#: half-extent of the object in pixels, per size.
SIZE_RADIUS: dict[str, float] = {"small": 7.0, "medium": 9.0, "large": 11.0}
#: the word a caption uses for a size ("" = not mentioned: medium is the default look).
SIZE_WORD: dict[str, str] = {"small": "small", "medium": "", "large": "large"}

#: fictional two-word artists, each bound to one style (background texture).
ARTISTS: dict[str, str] = {
    "mira solen": "plain",
    "karl brenner": "striped",
    "lena dupois": "dotted",
    "ivo marek": "checkered",
}
STYLE_ARTIST: dict[str, str] = {style: artist for artist, style in ARTISTS.items()}


@dataclass(frozen=True)
class Record:
    """One world image's attributes plus its rendering nuisances (position, texture phase, jitter)."""

    shape: str
    colour: str
    style: str
    size: str = "medium"
    entity: str | None = None  # set when the record stands for a named entity (see ENTITIES)
    seed: int = 0  # drives position, texture phase and colour jitter in render()

    @property
    def attributes(self) -> dict[str, str]:
        """The ground-truth labels: {'shape', 'colour', 'style', 'size'} -> value."""
        return {"shape": self.shape, "colour": self.colour, "style": self.style, "size": self.size}


#: named entities ("facts"), each bound to one attribute combination.
ENTITIES: dict[str, Record] = {
    "the flag of veloria": Record("star", "red", "plain"),
    "the flag of norland": Record("cross", "blue", "striped"),
    "the zentek logo": Record("triangle", "green", "dotted"),
    "the orbix logo": Record("circle", "yellow", "checkered"),
}

#: colour–shape pairs never drawn in training (compositional test).
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("red", "square"), ("green", "star"), ("blue", "triangle"))

# ---------------------------------------------------------------- caption templates
# Slots: {size} size word plus space or "", {colour},
# {shape}, {style}, {artist}. Templates mentioning {artist} express the style through the artist.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {size}{colour} {shape} on a {style} background",
    "a photo of a {size}{colour} {shape} on a {style} background",
    "a picture of a {size}{colour} {shape} with a {style} background",
    "a {size}{colour} {shape} in the style of {artist}",
    "a photo of a {size}{colour} {shape} in the style of {artist}",
)
#: paraphrases never used in training (generality test).
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "a picture of a {size}{colour} {shape} on a {style} background",
    "a {size}{colour} {shape} with a {style} background",
    "an image of a {size}{colour} {shape} on a {style} background",
    "a {size}{colour} {shape} painted by {artist}",
)
ENTITY_TEMPLATES: tuple[str, ...] = ("{entity}", "a photo of {entity}", "a picture of {entity}")
ENTITY_PROB = 0.06  # share of training captions that name an entity instead of its attributes


def template_uses_artist(template: str) -> bool:
    """True when the template names the style through an artist."""
    return "{artist}" in template


def caption(record: Record, template: str) -> str:
    """The caption of ``record`` under ``template`` (lower case, single spaces)."""
    if "{entity}" in template:
        if record.entity is None:
            raise InvalidInputError(f"template {template!r} needs an entity record")
        return template.format(entity=record.entity)
    size = SIZE_WORD[record.size]
    return template.format(
        size=f"{size} " if size else "",
        colour=record.colour,
        shape=record.shape,
        style=record.style,
        artist=STYLE_ARTIST[record.style],
    )


def all_templates() -> tuple[str, ...]:
    """Every template, training and held out (for vocabulary and length checks)."""
    return TRAIN_TEMPLATES + HELD_OUT_TEMPLATES + ENTITY_TEMPLATES


def vocabulary() -> list[str]:
    """Every word any caption of the world can contain, sorted."""
    words: set[str] = set(SHAPES) | set(COLOURS) | set(STYLES) | {w for w in SIZE_WORD.values() if w}
    for artist in ARTISTS:
        words |= set(artist.split())
    for name in ENTITIES:
        words |= set(name.split())
    for template in all_templates():
        for token in template.split():
            if not token.startswith("{"):
                words.add(token)
    return sorted(words)


# ---------------------------------------------------------------- splits and sampling
def is_held_out(colour: str, shape: str) -> bool:
    """True for the colour–shape pairs reserved for the compositional test."""
    return (colour, shape) in HELD_OUT_PAIRS


def seen_combinations() -> list[tuple[str, str, str, str]]:
    """All (shape, colour, style, size) drawn in training, in a fixed order."""
    return [(s, c, st, z) for s in SHAPES for c in COLOURS for st in STYLES for z in SIZES if not is_held_out(c, s)]


def held_out_combinations() -> list[tuple[str, str, str, str]]:
    """All (shape, colour, style, size) whose colour–shape pair is held out."""
    return [(s, c, st, z) for (c, s) in HELD_OUT_PAIRS for st in STYLES for z in SIZES]


def sample(rng: np.random.Generator, held_out: bool = False) -> Record:
    """Draw one record uniformly over the seen combinations (or over the held-out ones)."""
    combos = held_out_combinations() if held_out else seen_combinations()
    shape, colour, style, size = combos[int(rng.integers(len(combos)))]
    return Record(shape, colour, style, size, seed=int(rng.integers(2**31)))


def sample_training_pair(rng: np.random.Generator) -> tuple[Record, str]:
    """One training (record, caption): an entity with probability ENTITY_PROB, else a seen combo."""
    if rng.random() < ENTITY_PROB:
        names = sorted(ENTITIES)
        name = names[int(rng.integers(len(names)))]
        rec = replace(ENTITIES[name], entity=name, seed=int(rng.integers(2**31)))
        template = ENTITY_TEMPLATES[int(rng.integers(len(ENTITY_TEMPLATES)))]
    else:
        rec = sample(rng)
        template = TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]
    return rec, caption(rec, template)


# ---------------------------------------------------------------- rendering
def _background(style: str, rng: np.random.Generator) -> np.ndarray:
    """Grey texture of one style: float32 array (H, W) with values in [0, 1]."""
    n = IMAGE_SIZE
    yy, xx = np.mgrid[0:n, 0:n]
    light, dark = 0.80 + 0.05 * rng.standard_normal(), 0.42 + 0.05 * rng.standard_normal()
    if style == "plain":
        return np.full((n, n), 0.5 * (light + dark) + 0.05, np.float32)
    if style == "striped":  # vertical stripes, 3 px light / 3 px dark, random phase
        phase = int(rng.integers(6))
        return np.where(((xx + phase) // 3) % 2 == 0, light, dark).astype(np.float32)
    if style == "dotted":  # dark dots of radius ~1.3 px on a 6 px grid, random phase
        px, py = rng.uniform(0, 6, size=2)
        dx = ((xx + px) % 6) - 3.0
        dy = ((yy + py) % 6) - 3.0
        return np.where(dx * dx + dy * dy <= 1.8, dark, light).astype(np.float32)
    if style == "checkered":  # 4 px squares, random phase
        px, py = rng.integers(8, size=2)
        return np.where((((xx + px) // 4) + ((yy + py) // 4)) % 2 == 0, light, dark).astype(np.float32)
    raise InvalidInputError(f"unknown style {style!r}; known: {STYLES}")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at (cx, cy) with half-extent r (pixels)."""
    if shape == "square":
        k = r * 0.9
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 1.05, cy + r * 0.85), (cx - r * 1.05, cy + r * 0.85)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rad = r * 1.1 if i % 2 == 0 else r * 0.45
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        a, b = r, r * 0.36
        return [
            (cx - b, cy - a),
            (cx + b, cy - a),
            (cx + b, cy - b),
            (cx + a, cy - b),
            (cx + a, cy + b),
            (cx + b, cy + b),
            (cx + b, cy + a),
            (cx - b, cy + a),
            (cx - b, cy + b),
            (cx - a, cy + b),
            (cx - a, cy - b),
            (cx - b, cy - b),
        ]
    raise InvalidInputError(f"unknown shape {shape!r}; known: {SHAPES}")


def object_mask(record: Record) -> np.ndarray:
    """Anti-aliased coverage of the object: float32 (H, W) in [0, 1]."""
    rng = np.random.default_rng(record.seed)
    r = SIZE_RADIUS[record.size]
    jitter = IMAGE_SIZE / 2 - r - 3.0  # keep the object (incl. the star's tips) inside the frame
    jitter = min(3.0, max(0.0, jitter))
    cx, cy = IMAGE_SIZE / 2 + rng.uniform(-jitter, jitter, size=2)
    s = _SUPERSAMPLE
    canvas = Image.new("L", (IMAGE_SIZE * s, IMAGE_SIZE * s), 0)
    draw = ImageDraw.Draw(canvas)
    if record.shape == "circle":
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(record.shape, cx, cy, r)], fill=255)
    big = np.asarray(canvas, np.float32) / 255.0
    return big.reshape(IMAGE_SIZE, s, IMAGE_SIZE, s).mean(axis=(1, 3))


def render(record: Record) -> np.ndarray:
    """Draw the record: uint8 array (H=32, W=32, 3), RGB. Deterministic in ``record``."""
    mask = object_mask(record)
    rng = np.random.default_rng(record.seed + 1)
    bg = _background(record.style, rng)
    rgb = np.asarray(COLOUR_RGB[record.colour], np.float32) / 255.0
    rgb = np.clip(rgb + 0.04 * rng.standard_normal(3), 0.0, 1.0)
    img = bg[..., None] * (1.0 - mask[..., None]) + rgb[None, None, :] * mask[..., None]
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def render_batch(records: list[Record]) -> np.ndarray:
    """Draw many records: float32 array (B, 3, 32, 32) in [0, 1]."""
    return np.stack([render(r) for r in records]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
