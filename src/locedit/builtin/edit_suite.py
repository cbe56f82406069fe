"""Evaluation suites for edits of the built-in models, built from their world, disjoint from fits.

An edit is fitted on the training phrasings: DIFF-QUICKFIX's templates and the model's corpus
(`locedit_corpus.txt`, captions in the world's training and entity templates). Suites judge it on
phrasings it never saw, in two disjoint splits:

- ``dev``: for builtin:shapes the world's held-out paraphrases and one entity phrasing — the split on
  which locedit's defaults were chosen; for builtin:scenes every other held-out template;
- ``test``: for builtin:shapes new word orders and templates below; for builtin:scenes the other
  held-out templates and entity phrasings. Used for nothing but reporting.

Only the efficacy group uses training templates (it measures the edit where it was fitted), and
even there no prompt is a caption the edit was fitted on (`exclude`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from locedit.builtin import world
from locedit.builtin.world import SHAPES_WORLD, World
from locedit.errors import InvalidInputError
from locedit.evaluate.suite import EvalItem, SuiteError, SuiteSettings, normalize_caption

DEV_TEMPLATES: tuple[str, ...] = world.HELD_OUT_TEMPLATES
DEV_ENTITY_TEMPLATES: tuple[str, ...] = ("an image of {entity}",)
TEST_TEMPLATES: tuple[str, ...] = (
    "a {style} background with a {size}{colour} {shape}",
    "on a {style} background a {size}{colour} {shape}",
    "{size}{colour} {shape} on a {style} background",
    "a photo of a {size}{colour} {shape} with a {style} background",
    "an image of a {size}{colour} {shape} with a {style} background",
    "an image of a {size}{colour} {shape} in the style of {artist}",
    "a picture of a {size}{colour} {shape} painted by {artist}",
    "in the style of {artist} a {size}{colour} {shape}",
    "a {size}{colour} {shape} by {artist}",
)
TEST_ENTITY_TEMPLATES: tuple[str, ...] = ("the image of {entity}", "{entity} in a photo", "a picture with {entity}")
SPLITS = {"dev": (DEV_TEMPLATES, DEV_ENTITY_TEMPLATES), "test": (TEST_TEMPLATES, TEST_ENTITY_TEMPLATES)}


def splits(w: World) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{split: (templates, entity templates)} of world `w`; the two splits share no template."""
    if w is SHAPES_WORLD:
        return SPLITS
    held, held_e = w.held_out_templates, w.held_out_entity_templates
    return {"dev": (held[::2], held_e[:1]), "test": (held[1::2], held_e[1:] or held_e)}


def _object_attrs(w: World) -> tuple[str, ...]:
    """What the judge checks (size words vary, size is not judged); position where the world has one."""
    return ("shape", "colour", "style") + (("position",) if w.positions else ())


_GENERIC = frozenset({"the", "flag", "of", "logo"})  # entity-name words that name no one entity


def _kinds(w: World) -> dict[str, tuple[str, str]]:
    """Attribute and value of each world word a user may edit (style words, artists, colours, shapes, entities)."""
    kinds: dict[str, tuple[str, str]] = {}
    kinds.update({s: ("style", s) for s in w.styles})
    kinds.update({a: ("style", s) for a, s in w.artists.items()})
    kinds.update({c: ("colour", c) for c in w.colours})
    kinds.update({s: ("shape", s) for s in w.shapes})
    kinds.update({name: ("entity", name) for name in w.entities})
    # the entity's own name word: "veloria" (the flag of veloria), "zentek" (the zentek logo)
    kinds.update({word: ("entity", name) for name in w.entities for word in name.split() if word not in _GENERIC})
    return kinds


def concept_kind(concept: str, w: World = SHAPES_WORLD) -> tuple[str, str]:
    """(attribute, value) a world concept stands for: "karl brenner" -> ("style", "striped"),
    "veloria" -> ("entity", "the flag of veloria")."""
    try:
        return _kinds(w)[concept]
    except KeyError:
        raise InvalidInputError(
            f"{concept!r} is not a concept of the {w.name} world; use a style ({', '.join(w.styles)}), "
            f"an artist ({', '.join(w.artists)}), a colour ({', '.join(w.colours)}), a shape "
            f"({', '.join(w.shapes)}) or an entity ({', '.join(w.entities)})"
        ) from None


def _looks(concept: str, w: World) -> dict[str, str]:
    """The attribute values an image of `concept` shows: {"style": "striped"}, or an entity's looks."""
    attr, value = concept_kind(concept, w)
    if attr == "entity":
        return {a: v for a, v in w.entities[value].attributes.items() if a in _object_attrs(w)}
    return {attr: value}


def _route(concept: str, w: World) -> str:
    """Which template slot names the concept: "style", "artist", "colour", "shape" or "entity"."""
    attr, _ = concept_kind(concept, w)
    return "artist" if concept in w.artists else attr


def _names(template: str, record: world.Record, concept: str, w: World) -> bool:
    """Whether `record` captioned by `template` names `concept` in words."""
    route = _route(concept, w)
    if "{entity}" in template or route == "entity":  # an entity caption names the entity, not its looks
        return "{entity}" in template and route == "entity" and record.entity == concept_kind(concept, w)[1]
    if route == "artist":
        return "{artist}" in template and w.style_artist[record.style] == concept
    if route == "style":
        return "{style}" in template and record.style == concept
    return getattr(record, route) == concept


def _asks(record: world.Record, looks: dict[str, str]) -> bool:
    return all(record.attributes[a] == v for a, v in looks.items())


def edit_suite(
    key: str,
    value: str | None = None,
    n: int = SuiteSettings.per_group,
    seed: int = SuiteSettings.seed,
    split: str = SuiteSettings.split,
    exclude: Iterable[str] = (),
    w: World = SHAPES_WORLD,
) -> list[EvalItem]:
    """Prompts that judge the edit KEY -> VALUE on a built-in model (see locedit.evaluate.suite for the groups).

    Args:
        key: the edited concept (a style word, an artist, a colour, a shape or an entity).
        value: the concept it is mapped to (None: a removal; no to-target rate).
        n: items per group (a group with fewer distinct prompts available repeats prompts with new seeds).
        seed: picks the records and the generation seeds.
        split: "test" (report) or "dev" (tuning): which held-out phrasings the non-efficacy groups use.
        exclude: captions no item may be (the edit's fit captions; the model's corpus always is).
        w: the model's world (SHAPES_WORLD for builtin:shapes, SCENES_WORLD for builtin:scenes).

    Returns:
        EvalItems, n per group: efficacy (training templates, not fitted captions), generality,
        neighbours, attributes, entities (attribute edits only) and other_route (where the world has
        another way to ask for the key's look).
    """
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; use test or dev")
    templates, entity_templates = splits(w)[split]
    attr, _ = concept_kind(key, w)
    key_looks = _looks(key, w)
    target = _looks(value, w) if value is not None and value in _kinds(w) else {}
    banned = {normalize_caption(c) for c in exclude} | {normalize_caption(c) for c in _corpus(w)}
    rng = np.random.default_rng(seed)
    seen = w.seen_combinations()
    entities = sorted(w.entities)

    def draw(templates_, want) -> list[EvalItem]:
        """n items whose (record, template) satisfy want(record, template) -> (group fields) or None."""
        items, prompts, tries = [], set(), 0
        while len(items) < n and tries < 200 * n:
            tries += 1
            template = templates_[int(rng.integers(len(templates_)))]
            if "{entity}" in template:
                name = entities[int(rng.integers(len(entities)))]
                rec = replace(w.entities[name], entity=name)
            else:
                rec = w.record(seen[int(rng.integers(len(seen)))])
            fields = want(rec, template)
            if fields is None:
                continue
            prompt = w.caption(rec, template)
            if normalize_caption(prompt) in banned or (prompt in prompts and tries < 100 * n):
                continue
            prompts.add(prompt)
            items.append(EvalItem(prompt=prompt, seed=int(rng.integers(2**31)), **fields))
        return items

    def shown(rec: world.Record) -> dict[str, str]:
        return {a: v for a, v in rec.attributes.items() if a in _object_attrs(w)}

    def keyed(group):
        def want(rec, template):
            if not _names(template, rec, key, w):
                return None
            others = {} if attr == "entity" else {a: v for a, v in shown(rec).items() if a != attr}
            return {"group": group, "key": key_looks, "target": target, "expect": others}

        return want

    def neighbour(rec, template):
        if _asks(rec, key_looks) or (rec.entity is None) != (attr != "entity"):
            return None
        return {"group": "neighbours", "expect": shown(rec) if attr == "entity" else {attr: rec.attributes[attr]}}

    def attributes(rec, template):
        if rec.entity is not None or _asks(rec, key_looks):
            return None
        return {"group": "attributes", "expect": {a: v for a, v in shown(rec).items() if a != attr}}

    def entity(rec, template):
        if rec.entity is None or _asks(rec, key_looks):
            return None
        return {"group": "entities", "expect": shown(rec)}

    def other_route(rec, template):
        if not _asks(rec, key_looks) or _names(template, rec, key, w) or (rec.entity is not None and attr == "entity"):
            return None
        return {"group": "other_route", "expect": shown(rec)}

    train = w.entity_templates if attr == "entity" else w.train_templates
    held = entity_templates if attr == "entity" else templates
    every = templates + entity_templates
    suite = draw(train, keyed("efficacy")) + draw(held, keyed("generality"))
    suite += draw(entity_templates if attr == "entity" else templates, neighbour)
    suite += draw(templates, attributes)
    if attr != "entity":
        suite += draw(entity_templates, entity)
    suite += draw(every, other_route)
    return suite


def world_of(pipe) -> World:
    """The built-in world whose images `pipe` draws (by its default image size); SHAPES_WORLD without a pipe."""
    if pipe is None:
        return SHAPES_WORLD
    size = pipe.unet.config.sample_size * getattr(pipe, "vae_scale_factor", 1)
    found = world.world_drawing(size, size)
    if found is not None:
        return found
    raise SuiteError(f"no built-in world draws {size}×{size} images; the builtin suite is for builtin models")


def suite_for_edit(edit, *, per_group: int, seed: int, split: str, pipe=None) -> list[EvalItem]:
    """The suite of `edit` (one pair of world concepts): `edit_suite` of its pair, disjoint from its fit
    captions, in the world of `pipe`. Registered as the ``builtin`` suite (locedit.builtin.plugins)."""
    pairs = edit.meta.get("pairs") or []
    if len(pairs) != 1:
        raise SuiteError(
            f"the builtin suite judges one (key, value) pair; this edit has {len(pairs)}: give --suite FILE"
        )
    key, value = pairs[0]
    exclude = edit.meta.get("fit_captions", ())
    return edit_suite(key, value, n=per_group, seed=seed, split=split, exclude=exclude, w=world_of(pipe))


def _corpus(w: World) -> list[str]:
    """The shipped model's corpus captions (none while the world's model is not shipped: the edit's
    fit captions, which include the corpus it read, are excluded anyway)."""
    from locedit.edit.quickfix import CORPUS_FILE, read_corpus
    from locedit.models.loading import BUILTIN_MODELS

    folder = BUILTIN_MODELS.get(w.name)
    return read_corpus(folder / CORPUS_FILE) if folder is not None and (folder / CORPUS_FILE).exists() else []
