"""Evaluation suites for edits of the built-in shapes model, built from the world, disjoint from fits.

An edit is fitted on the training phrasings: DIFF-QUICKFIX's templates and the model's corpus
(`locedit_corpus.txt`, captions in world.TRAIN_TEMPLATES / ENTITY_TEMPLATES). Suites judge it on
phrasings it never saw, in two disjoint splits:

- ``dev``: the world's held-out paraphrases (world.HELD_OUT_TEMPLATES) and one entity phrasing —
  the split on which locedit's defaults were chosen;
- ``test``: new word orders and templates below, used for nothing but reporting.

Only the efficacy group uses training templates (it measures the edit where it was fitted), and
even there no prompt is a caption the edit was fitted on (`exclude`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from locedit.builtin import world
from locedit.errors import InvalidInputError
from locedit.evaluate.suite import EvalItem, SuiteError, normalize_caption

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
_OBJECT_ATTRS = ("shape", "colour", "style")  # what the judge checks (size words vary, size is not judged)

# attribute and value of each world word a user may edit (style words, artists, colours, shapes, entities)
_KINDS: dict[str, tuple[str, str]] = {}
_KINDS.update({s: ("style", s) for s in world.STYLES})
_KINDS.update({a: ("style", s) for a, s in world.ARTISTS.items()})
_KINDS.update({c: ("colour", c) for c in world.COLOURS})
_KINDS.update({s: ("shape", s) for s in world.SHAPES})
_KINDS.update({name: ("entity", name) for name in world.ENTITIES})
_KINDS.update({name.split()[-1]: ("entity", name) for name in world.ENTITIES})  # "veloria", "zentek"


def concept_kind(concept: str) -> tuple[str, str]:
    """(attribute, value) a world concept stands for: "karl brenner" -> ("style", "striped"),
    "veloria" -> ("entity", "the flag of veloria")."""
    try:
        return _KINDS[concept]
    except KeyError:
        raise InvalidInputError(
            f"{concept!r} is not a concept of the shapes world; use a style ({', '.join(world.STYLES)}), "
            f"an artist ({', '.join(world.ARTISTS)}), a colour ({', '.join(world.COLOURS)}), a shape "
            f"({', '.join(world.SHAPES)}) or an entity ({', '.join(world.ENTITIES)})"
        ) from None


def _looks(concept: str) -> dict[str, str]:
    """The attribute values an image of `concept` shows: {"style": "striped"}, or an entity's three."""
    attr, value = concept_kind(concept)
    if attr == "entity":
        return {a: v for a, v in world.ENTITIES[value].attributes.items() if a in _OBJECT_ATTRS}
    return {attr: value}


def _route(concept: str) -> str:
    """Which template slot names the concept: "style", "artist", "colour", "shape" or "entity"."""
    attr, _ = concept_kind(concept)
    return "artist" if concept in world.ARTISTS else attr


def _names(template: str, record: world.Record, concept: str) -> bool:
    """Whether `record` captioned by `template` names `concept` in words."""
    route = _route(concept)
    if "{entity}" in template or route == "entity":  # an entity caption names the entity, not its looks
        return "{entity}" in template and route == "entity" and record.entity == concept_kind(concept)[1]
    if route == "artist":
        return "{artist}" in template and world.STYLE_ARTIST[record.style] == concept
    if route == "style":
        return "{style}" in template and record.style == concept
    return getattr(record, route) == concept


def _asks(record: world.Record, looks: dict[str, str]) -> bool:
    return all(record.attributes[a] == v for a, v in looks.items())


def edit_suite(
    key: str,
    value: str | None = None,
    n: int = 40,
    seed: int = 0,
    split: str = "test",
    exclude: Iterable[str] = (),
) -> list[EvalItem]:
    """Prompts that judge the edit KEY -> VALUE on the shapes model (see locedit.evaluate.suite for the groups).

    Args:
        key: the edited concept (a style word, an artist, a colour, a shape or an entity).
        value: the concept it is mapped to (None: a removal; no to-target rate).
        n: items per group (a group with fewer distinct prompts available repeats prompts with new seeds).
        seed: picks the records and the generation seeds.
        split: "test" (report) or "dev" (tuning): which held-out phrasings the non-efficacy groups use.
        exclude: captions no item may be (the edit's fit captions; the model's corpus always is).

    Returns:
        EvalItems, n per group: efficacy (training templates, not fitted captions), generality,
        neighbours, attributes, entities (attribute edits only) and other_route (where the world has
        another way to ask for the key's look).
    """
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; use test or dev")
    templates, entity_templates = SPLITS[split]
    attr, _ = concept_kind(key)
    key_looks = _looks(key)
    target = _looks(value) if value is not None and value in _KINDS else {}
    banned = {normalize_caption(c) for c in exclude} | {normalize_caption(c) for c in _corpus()}
    rng = np.random.default_rng(seed)
    seen = world.seen_combinations()
    entities = sorted(world.ENTITIES)

    def draw(templates_, want) -> list[EvalItem]:
        """n items whose (record, template) satisfy want(record, template) -> (group fields) or None."""
        items, prompts, tries = [], set(), 0
        while len(items) < n and tries < 200 * n:
            tries += 1
            template = templates_[int(rng.integers(len(templates_)))]
            if "{entity}" in template:
                name = entities[int(rng.integers(len(entities)))]
                rec = replace(world.ENTITIES[name], entity=name)
            else:
                shape, colour, style, size = seen[int(rng.integers(len(seen)))]
                rec = world.Record(shape, colour, style, size)
            fields = want(rec, template)
            if fields is None:
                continue
            prompt = world.caption(rec, template)
            if normalize_caption(prompt) in banned or (prompt in prompts and tries < 100 * n):
                continue
            prompts.add(prompt)
            items.append(EvalItem(prompt=prompt, seed=int(rng.integers(2**31)), **fields))
        return items

    def shown(rec: world.Record) -> dict[str, str]:
        return {a: v for a, v in rec.attributes.items() if a in _OBJECT_ATTRS}

    def keyed(group):
        def want(rec, template):
            if not _names(template, rec, key):
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
        if not _asks(rec, key_looks) or _names(template, rec, key) or (rec.entity is not None and attr == "entity"):
            return None
        return {"group": "other_route", "expect": shown(rec)}

    train = world.ENTITY_TEMPLATES if attr == "entity" else world.TRAIN_TEMPLATES
    held = entity_templates if attr == "entity" else templates
    every = templates + entity_templates
    suite = draw(train, keyed("efficacy")) + draw(held, keyed("generality"))
    suite += draw(entity_templates if attr == "entity" else templates, neighbour)
    suite += draw(templates, attributes)
    if attr != "entity":
        suite += draw(entity_templates, entity)
    suite += draw(every, other_route)
    return suite


def suite_for_edit(edit, per_group: int = 40, seed: int = 0, split: str = "test") -> list[EvalItem]:
    """The suite of `edit` (one pair of world concepts): `edit_suite` of its pair, disjoint from its fit
    captions. Registered as the ``builtin`` suite (locedit.builtin.plugins)."""
    pairs = edit.meta.get("pairs") or []
    if len(pairs) != 1:
        raise SuiteError(
            f"the builtin suite judges one (key, value) pair; this edit has {len(pairs)}: give --suite FILE"
        )
    key, value = pairs[0]
    return edit_suite(key, value, n=per_group, seed=seed, split=split, exclude=edit.meta.get("fit_captions", ()))


def _corpus() -> list[str]:
    from locedit.builtin import builtin_path
    from locedit.edit.quickfix import CORPUS_FILE, read_corpus

    return read_corpus(builtin_path("shapes") / CORPUS_FILE)
