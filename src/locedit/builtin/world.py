"""The built-in worlds: procedurally drawn images with known attributes, and their captions.

A world draws one object (shape, colour, size and, in worlds with positions, a position) on a grey
textured background (the *style*). Styles are also reachable through named fictional artists ("in
the style of karl brenner"), and named entities ("the flag of veloria", "the zentek logo") are bound
to fixed attribute combinations. Captions come from templates; some templates (paraphrases) and some
colour–shape pairs (compositions) are held out of training. Everything is deterministic given a seed.

Two worlds are defined:

- ``SHAPES_WORLD`` (model ``builtin:shapes``): 32×32 images, 5 shapes × 5 colours × 4 styles ×
  3 sizes, 4 artists, 4 entities, 5 training templates. The module-level names (``SHAPES``,
  ``caption``, ``render`` …) are this world's, as the shipped model and its suites use them.
- ``SCENES_WORLD`` (model ``builtin:scenes``): 48×48 images, 8 shapes × 6 colours × 8 styles ×
  3 sizes × 5 positions, 8 artists, 8 entities, and templates composed from phrase pieces in
  several word orders, some of whose combinations are held out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

from locedit.errors import InvalidInputError

_SUPERSAMPLE = 4  # shapes are drawn at 4× resolution, then box-downsampled (anti-aliasing)


@dataclass(frozen=True)
class Record:
    """One world image's attributes plus its rendering nuisances (position jitter, texture phase, colour jitter)."""

    shape: str
    colour: str
    style: str
    size: str = "medium"
    entity: str | None = None  # set when the record stands for a named entity (see World.entities)
    seed: int = 0  # drives position jitter, texture phase and colour jitter in render()
    position: str | None = None  # worlds with positions: "centre", "left", …; None in worlds without

    @property
    def attributes(self) -> dict[str, str]:
        """The ground-truth labels: {'shape', 'colour', 'style', 'size'[, 'position']} -> value."""
        out = {"shape": self.shape, "colour": self.colour, "style": self.style, "size": self.size}
        if self.position is not None:
            out["position"] = self.position
        return out


@dataclass(frozen=True)
class World:
    """A world's vocabularies, caption templates, held-out splits and renderer.

    Template slots: ``{size}`` (the size word plus a space, or ""), ``{colour}``, ``{shape}``,
    ``{style}``, ``{artist}`` (the artist bound to the style), ``{where}`` (a space plus the
    position phrase, or "" for the default position), ``{entity}``.
    """

    name: str
    image_size: int  # pixels per side
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    styles: tuple[str, ...]
    sizes: tuple[str, ...]
    colour_rgb: dict[str, tuple[int, int, int]]  # RGB 0..255; every rendered object jitters around it
    colour_hue: dict[str, float]  # HSV hue (degrees) of each colour, for the classifier's hue rule
    size_radius: dict[str, float]  # half-extent of the object in pixels, per size
    size_word: dict[str, str]  # the word a caption uses for a size ("" = not mentioned)
    artists: dict[str, str]  # artist name -> style
    entities: dict[str, Record]  # entity name -> its attribute combination
    held_out_pairs: tuple[tuple[str, str], ...]  # (colour, shape) pairs never drawn in training
    train_templates: tuple[str, ...]
    held_out_templates: tuple[str, ...]  # paraphrases never used in training
    entity_templates: tuple[str, ...]
    held_out_entity_templates: tuple[str, ...] = ()
    entity_prob: float = 0.06  # share of training captions that name an entity instead of its attributes
    positions: tuple[str, ...] = ()  # () = no position attribute (the object jitters around the centre)
    position_word: dict[str, str] = field(default_factory=dict)  # phrase per position ("" = not mentioned)
    position_offset: float = 0.0  # pixels from the centre to a non-centre position
    position_jitter: float = 3.0  # max pixels of random placement around the (position's) centre
    texture_scale: int = 1  # texture periods in multiples of the 32-px world's

    # ------------------------------------------------------------ vocabulary and captions
    @cached_property
    def style_artist(self) -> dict[str, str]:
        """style -> its artist."""
        return {style: artist for artist, style in self.artists.items()}

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute names of this world's records."""
        return ("shape", "colour", "style", "size") + (("position",) if self.positions else ())

    def caption(self, record: Record, template: str) -> str:
        """The caption of ``record`` under ``template`` (lower case, single spaces)."""
        if "{entity}" in template:
            if record.entity is None:
                raise InvalidInputError(f"template {template!r} needs an entity record")
            return template.format(entity=record.entity)
        size = self.size_word[record.size]
        where = self.position_word.get(record.position or "", "")
        return template.format(
            size=f"{size} " if size else "",
            colour=record.colour,
            shape=record.shape,
            style=record.style,
            artist=self.style_artist[record.style],
            where=f" {where}" if where else "",
        )

    def all_templates(self) -> tuple[str, ...]:
        """Every template, training and held out (for vocabulary and length checks)."""
        return self.train_templates + self.held_out_templates + self.entity_templates + self.held_out_entity_templates

    def vocabulary(self) -> list[str]:
        """Every word any caption of the world can contain, sorted."""
        words: set[str] = set(self.shapes) | set(self.colours) | set(self.styles)
        words |= {w for w in self.size_word.values() if w}
        for phrase in [*self.artists, *self.entities, *self.position_word.values()]:
            words |= set(phrase.split())
        for template in self.all_templates():
            for token in template.replace(",", " ").split():
                if "{" not in token:
                    words.add(token)
        return sorted(words)

    # ------------------------------------------------------------ splits and sampling
    def is_held_out(self, colour: str, shape: str) -> bool:
        """True for the colour–shape pairs reserved for the compositional test."""
        return (colour, shape) in self.held_out_pairs

    def _combinations(self, held_out: bool) -> list[tuple]:
        positions = self.positions or (None,)
        return [
            (s, c, st, z, p)
            for s in self.shapes
            for c in self.colours
            for st in self.styles
            for z in self.sizes
            for p in positions
            if self.is_held_out(c, s) == held_out
        ]

    @cached_property
    def _seen(self) -> list[tuple]:
        return self._combinations(held_out=False)

    @cached_property
    def _held(self) -> list[tuple]:
        # the shapes world lists held-out combinations in HELD_OUT_PAIRS order
        order = {pair: i for i, pair in enumerate(self.held_out_pairs)}
        return sorted(self._combinations(held_out=True), key=lambda t: order[(t[1], t[0])])

    def seen_combinations(self) -> list[tuple[str, ...]]:
        """All (shape, colour, style, size[, position]) drawn in training, in a fixed order."""
        return [t[:4] if t[4] is None else t for t in self._seen]

    def held_out_combinations(self) -> list[tuple[str, ...]]:
        """All (shape, colour, style, size[, position]) whose colour–shape pair is held out."""
        return [t[:4] if t[4] is None else t for t in self._held]

    def record(self, combination: tuple[str, ...], seed: int = 0) -> Record:
        """A Record from a (shape, colour, style, size[, position]) tuple."""
        shape, colour, style, size, *rest = combination
        return Record(shape, colour, style, size, seed=seed, position=rest[0] if rest else None)

    def sample(self, rng: np.random.Generator, held_out: bool = False) -> Record:
        """Draw one record uniformly over the seen combinations (or over the held-out ones)."""
        combos = self._held if held_out else self._seen
        shape, colour, style, size, position = combos[int(rng.integers(len(combos)))]
        return Record(shape, colour, style, size, seed=int(rng.integers(2**31)), position=position)

    def sample_training_pair(self, rng: np.random.Generator) -> tuple[Record, str]:
        """One training (record, caption): an entity with probability entity_prob, else a seen combination."""
        if rng.random() < self.entity_prob:
            names = sorted(self.entities)
            name = names[int(rng.integers(len(names)))]
            rec = replace(self.entities[name], entity=name, seed=int(rng.integers(2**31)))
            template = self.entity_templates[int(rng.integers(len(self.entity_templates)))]
        else:
            rec = self.sample(rng)
            template = self.train_templates[int(rng.integers(len(self.train_templates)))]
        return rec, self.caption(rec, template)

    def training_captions(self) -> set[str]:
        """Every caption the training distribution can produce (for split checks)."""
        out: set[str] = set()
        for combo in self.seen_combinations():
            rec = self.record(combo)
            for t in self.train_templates:
                out.add(self.caption(rec, t))
        for name, rec in self.entities.items():
            for t in self.entity_templates:
                out.add(self.caption(replace(rec, entity=name), t))
        return out

    # ------------------------------------------------------------ rendering
    def _background(self, style: str, rng: np.random.Generator) -> np.ndarray:
        """Grey texture of one style: float32 array (H, W) with values in [0, 1]."""
        n, k = self.image_size, self.texture_scale
        yy, xx = np.mgrid[0:n, 0:n]
        light, dark = 0.80 + 0.05 * rng.standard_normal(), 0.42 + 0.05 * rng.standard_normal()
        if style == "plain":
            return np.full((n, n), 0.5 * (light + dark) + 0.05, np.float32)
        if style == "striped":  # vertical stripes, 3k px light / 3k px dark, random phase
            phase = int(rng.integers(6 * k))
            return np.where(((xx + phase) // (3 * k)) % 2 == 0, light, dark).astype(np.float32)
        if style == "dotted":  # dark dots of radius ~1.3k px on a 6k px grid, random phase
            px, py = rng.uniform(0, 6 * k, size=2)
            dx = ((xx + px) % (6 * k)) - 3.0 * k
            dy = ((yy + py) % (6 * k)) - 3.0 * k
            return np.where(dx * dx + dy * dy <= 1.8 * k * k, dark, light).astype(np.float32)
        if style == "checkered":  # 4k px squares, random phase
            px, py = rng.integers(8 * k, size=2)
            return np.where((((xx + px) // (4 * k)) + ((yy + py) // (4 * k))) % 2 == 0, light, dark).astype(np.float32)
        if style == "wavy":  # horizontal sine bands, period 8k px, amplitude 2k px
            phase = rng.uniform(0, 2 * math.pi)
            y = yy + 2.0 * k * np.sin(2 * math.pi * xx / (12.0 * k) + phase)
            return np.where((y // (3 * k)) % 2 == 0, light, dark).astype(np.float32)
        if style == "grid":  # thin dark lines (1k px) every 6k px on light
            px, py = rng.integers(6 * k, size=2)
            on = (((xx + px) % (6 * k)) < k) | (((yy + py) % (6 * k)) < k)
            return np.where(on, dark, light).astype(np.float32)
        if style == "diagonal":  # stripes at 45°, 3k px wide, random phase
            phase = int(rng.integers(6 * k))
            return np.where(((xx + yy + phase) // (3 * k)) % 2 == 0, light, dark).astype(np.float32)
        if style == "gradient":  # vertical ramp, light at the top, dark at the bottom (or reversed)
            ramp = yy / (n - 1.0)
            if rng.random() < 0.5:
                ramp = 1.0 - ramp
            return (light + (dark - light) * ramp).astype(np.float32)
        raise InvalidInputError(f"unknown style {style!r}; known: {self.styles}")

    def _centre(self, record: Record, rng: np.random.Generator, r: float) -> tuple[float, float]:
        """Pixel centre of the object: the position's anchor plus a uniform jitter."""
        half = self.image_size / 2
        if not self.positions:  # the shapes world: jitter around the centre, the object inside the frame
            jitter = min(self.position_jitter, max(0.0, half - r - 3.0))
            cx, cy = half + rng.uniform(-jitter, jitter, size=2)
            return float(cx), float(cy)
        d = self.position_offset
        dx, dy = {"centre": (0, 0), "left": (-d, 0), "right": (d, 0), "top": (0, -d), "bottom": (0, d)}[
            record.position or "centre"
        ]
        jx, jy = rng.uniform(-self.position_jitter, self.position_jitter, size=2)
        return float(half + dx + jx), float(half + dy + jy)

    def object_mask(self, record: Record) -> np.ndarray:
        """Anti-aliased coverage of the object: float32 (H, W) in [0, 1]."""
        rng = np.random.default_rng(record.seed)
        r = self.size_radius[record.size]
        cx, cy = self._centre(record, rng, r)
        s, n = _SUPERSAMPLE, self.image_size
        canvas = Image.new("L", (n * s, n * s), 0)
        draw = ImageDraw.Draw(canvas)
        if record.shape == "circle":
            draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        elif record.shape == "ring":  # an annulus: the background shows through the hole
            draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
            h = 0.5 * r
            draw.ellipse([(cx - h) * s, (cy - h) * s, (cx + h) * s, (cy + h) * s], fill=0)
        else:
            draw.polygon([(x * s, y * s) for x, y in _polygon(record.shape, cx, cy, r)], fill=255)
        big = np.asarray(canvas, np.float32) / 255.0
        return big.reshape(n, s, n, s).mean(axis=(1, 3))

    def render(self, record: Record) -> np.ndarray:
        """Draw the record: uint8 array (H, W, 3), RGB. Deterministic in ``record``."""
        mask = self.object_mask(record)
        rng = np.random.default_rng(record.seed + 1)
        bg = self._background(record.style, rng)
        rgb = np.asarray(self.colour_rgb[record.colour], np.float32) / 255.0
        rgb = np.clip(rgb + 0.04 * rng.standard_normal(3), 0.0, 1.0)
        img = bg[..., None] * (1.0 - mask[..., None]) + rgb[None, None, :] * mask[..., None]
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)

    def render_batch(self, records: list[Record]) -> np.ndarray:
        """Draw many records: float32 array (B, 3, H, W) in [0, 1]."""
        return np.stack([self.render(r) for r in records]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


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
            (cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
            (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
            (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b),
        ]  # fmt: skip
    if shape == "diamond":  # a rhombus, taller than wide
        return [(cx, cy - r * 1.1), (cx + r * 0.65, cy), (cx, cy + r * 1.1), (cx - r * 0.65, cy)]
    if shape == "heart":  # the classic parametric heart, scaled to half-extent r
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 16.0, cy - r * (y + 2.5) / 15.0))
        return pts
    raise InvalidInputError(f"unknown shape {shape!r}")


# ================================================================ the shapes world (builtin:shapes)
SHAPES_WORLD = World(
    name="shapes",
    image_size=32,
    shapes=("circle", "square", "triangle", "star", "cross"),
    colours=("red", "yellow", "green", "blue", "purple"),
    styles=("plain", "striped", "dotted", "checkered"),
    sizes=("small", "medium", "large"),
    colour_rgb={
        "red": (220, 40, 40),
        "yellow": (230, 205, 30),
        "green": (40, 170, 60),
        "blue": (40, 80, 225),
        "purple": (150, 50, 205),
    },
    colour_hue={"red": 0.0, "yellow": 53.0, "green": 128.0, "blue": 226.0, "purple": 280.0},
    size_radius={"small": 7.0, "medium": 9.0, "large": 11.0},
    size_word={"small": "small", "medium": "", "large": "large"},
    artists={"mira solen": "plain", "karl brenner": "striped", "lena dupois": "dotted", "ivo marek": "checkered"},
    entities={
        "the flag of veloria": Record("star", "red", "plain"),
        "the flag of norland": Record("cross", "blue", "striped"),
        "the zentek logo": Record("triangle", "green", "dotted"),
        "the orbix logo": Record("circle", "yellow", "checkered"),
    },
    held_out_pairs=(("red", "square"), ("green", "star"), ("blue", "triangle")),
    train_templates=(
        "a {size}{colour} {shape} on a {style} background",
        "a photo of a {size}{colour} {shape} on a {style} background",
        "a picture of a {size}{colour} {shape} with a {style} background",
        "a {size}{colour} {shape} in the style of {artist}",
        "a photo of a {size}{colour} {shape} in the style of {artist}",
    ),
    held_out_templates=(
        "a picture of a {size}{colour} {shape} on a {style} background",
        "a {size}{colour} {shape} with a {style} background",
        "an image of a {size}{colour} {shape} on a {style} background",
        "a {size}{colour} {shape} painted by {artist}",
    ),
    entity_templates=("{entity}", "a photo of {entity}", "a picture of {entity}"),
)

# Module-level names of the shapes world, as the shipped builtin:shapes model and its suites use them.
IMAGE_SIZE = SHAPES_WORLD.image_size
SHAPES = SHAPES_WORLD.shapes
COLOURS = SHAPES_WORLD.colours
STYLES = SHAPES_WORLD.styles
SIZES = SHAPES_WORLD.sizes
COLOUR_RGB = SHAPES_WORLD.colour_rgb
COLOUR_HUE = SHAPES_WORLD.colour_hue
SIZE_RADIUS = SHAPES_WORLD.size_radius
SIZE_WORD = SHAPES_WORLD.size_word
ARTISTS = SHAPES_WORLD.artists
STYLE_ARTIST = SHAPES_WORLD.style_artist
ENTITIES = SHAPES_WORLD.entities
HELD_OUT_PAIRS = SHAPES_WORLD.held_out_pairs
TRAIN_TEMPLATES = SHAPES_WORLD.train_templates
HELD_OUT_TEMPLATES = SHAPES_WORLD.held_out_templates
ENTITY_TEMPLATES = SHAPES_WORLD.entity_templates
ENTITY_PROB = SHAPES_WORLD.entity_prob
caption = SHAPES_WORLD.caption
all_templates = SHAPES_WORLD.all_templates
vocabulary = SHAPES_WORLD.vocabulary
is_held_out = SHAPES_WORLD.is_held_out
seen_combinations = SHAPES_WORLD.seen_combinations
held_out_combinations = SHAPES_WORLD.held_out_combinations
sample = SHAPES_WORLD.sample
sample_training_pair = SHAPES_WORLD.sample_training_pair
object_mask = SHAPES_WORLD.object_mask
render = SHAPES_WORLD.render
render_batch = SHAPES_WORLD.render_batch


# ================================================================ the scenes world (builtin:scenes)
#: caption pieces of the scenes world; templates are every combination in two word orders.
_SCENE_PREFIXES = ("", "a photo of ", "a picture of ", "an image of ", "a render of ")
_SCENE_OBJECTS = (
    "a {size}{colour} {shape}{where}",
    "a {size}{shape} in {colour}{where}",
    "one {size}{colour} {shape}{where}",
)
_SCENE_BACKGROUNDS = (
    "on a {style} background",
    "with a {style} background",
    "against a {style} background",
    "over a {style} pattern",
    "in the style of {artist}",
    "by {artist}",
    "painted by {artist}",
    "drawn by {artist}",
)
_SCENE_FRONTS = ("{style} background, ", "{style} pattern, ", "art by {artist}, ", "{artist}, ")
_SCENE_HOLD_EVERY = 6  # one combination of pieces in six is held out (each piece still appears in training)


def _scene_templates() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, held-out) templates: objects × backgrounds after the prefix, and fronts before it.

    A combination is held out when the sum of its piece indices is ≡ −1 (mod 6): held-out phrasings
    are new combinations and word orders of pieces that training does show.
    """
    train, held = [], []
    for (i, prefix), (j, obj) in itertools.product(enumerate(_SCENE_PREFIXES), enumerate(_SCENE_OBJECTS)):
        for k, bg in enumerate(_SCENE_BACKGROUNDS):
            (held if (i + j + k) % _SCENE_HOLD_EVERY == _SCENE_HOLD_EVERY - 1 else train).append(f"{prefix}{obj} {bg}")
        for k, front in enumerate(_SCENE_FRONTS):
            (held if (i + j + k + 3) % _SCENE_HOLD_EVERY == _SCENE_HOLD_EVERY - 1 else train).append(
                f"{front}{prefix}{obj}"
            )
    return tuple(train), tuple(held)


_SCENE_TRAIN, _SCENE_HELD = _scene_templates()

SCENES_WORLD = World(
    name="scenes",
    image_size=48,
    shapes=("circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring"),
    colours=("red", "orange", "yellow", "green", "blue", "purple"),
    styles=("plain", "striped", "dotted", "checkered", "wavy", "grid", "diagonal", "gradient"),
    sizes=("small", "medium", "large"),
    colour_rgb={
        "red": (220, 40, 40),
        "orange": (240, 135, 25),
        "yellow": (230, 205, 30),
        "green": (40, 170, 60),
        "blue": (40, 80, 225),
        "purple": (150, 50, 205),
    },
    colour_hue={"red": 0.0, "orange": 28.0, "yellow": 53.0, "green": 128.0, "blue": 226.0, "purple": 280.0},
    size_radius={"small": 6.0, "medium": 8.0, "large": 10.0},
    size_word={"small": "small", "medium": "", "large": "large"},
    artists={
        "mira solen": "plain",
        "karl brenner": "striped",
        "lena dupois": "dotted",
        "ivo marek": "checkered",
        "tomas reiwald": "wavy",
        "anya vostrel": "grid",
        "piet kanter": "diagonal",
        "elsa moravik": "gradient",
    },
    entities={
        "the flag of veloria": Record("star", "red", "plain", "large", position="centre"),
        "the flag of norland": Record("cross", "blue", "striped", "medium", position="top"),
        "the zentek logo": Record("triangle", "green", "dotted", "small", position="left"),
        "the orbix logo": Record("circle", "yellow", "checkered", "medium", position="right"),
        "the flag of castavia": Record("heart", "purple", "wavy", "large", position="bottom"),
        "the krovan logo": Record("diamond", "orange", "grid", "small", position="centre"),
        "the flag of ostmark": Record("ring", "green", "diagonal", "medium", position="left"),
        "the lumio logo": Record("square", "purple", "gradient", "large", position="right"),
    },
    held_out_pairs=(
        ("red", "square"),
        ("green", "star"),
        ("blue", "triangle"),
        ("orange", "heart"),
        ("purple", "ring"),
        ("yellow", "diamond"),
    ),
    train_templates=_SCENE_TRAIN,
    held_out_templates=_SCENE_HELD,
    entity_templates=("{entity}", "a photo of {entity}", "a picture of {entity}", "a render of {entity}"),
    held_out_entity_templates=("an image of {entity}", "{entity}, a photo"),
    entity_prob=0.08,
    positions=("centre", "left", "right", "top", "bottom"),
    position_word={
        "centre": "",
        "left": "on the left",
        "right": "on the right",
        "top": "at the top",
        "bottom": "at the bottom",
    },
    position_offset=11.0,
    position_jitter=1.5,
    texture_scale=2,
)

WORLDS: dict[str, World] = {w.name: w for w in (SHAPES_WORLD, SCENES_WORLD)}


def world_drawing(height: int, width: int) -> World | None:
    """The world whose images are height × width pixels, or None."""
    return next((w for w in WORLDS.values() if w.image_size == height == width), None)


def get_world(name: str) -> World:
    """The world called ``name`` ("shapes" or "scenes")."""
    if name not in WORLDS:
        raise InvalidInputError(f"unknown world {name!r}; known: {', '.join(WORLDS)}")
    return WORLDS[name]
