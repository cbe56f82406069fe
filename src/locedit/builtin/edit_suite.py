"""Evaluation suites for edits of the built-in shapes model: which prompts test efficacy, generality
and specificity of an edit "KEY -> VALUE", built from the world's vocabularies and templates."""

from __future__ import annotations

import numpy as np

from locedit.builtin import world
from locedit.evaluate.edit_eval import EvalItem

# attribute of each world word a user may edit (style words, artists, colours, shapes)
_KINDS: dict[str, tuple[str, str]] = {}
_KINDS.update({s: ("style", s) for s in world.STYLES})
_KINDS.update({a: ("style", s) for a, s in world.ARTISTS.items()})
_KINDS.update({c: ("colour", c) for c in world.COLOURS})
_KINDS.update({s: ("shape", s) for s in world.SHAPES})


def concept_kind(concept: str) -> tuple[str, str]:
    """(attribute, value) a world concept stands for: "karl brenner" -> ("style", "striped")."""
    try:
        return _KINDS[concept]
    except KeyError:
        raise ValueError(
            f"{concept!r} is not a concept of the shapes world; use a style ({', '.join(world.STYLES)}), "
            f"an artist ({', '.join(world.ARTISTS)}), a colour ({', '.join(world.COLOURS)}) or a shape"
        ) from None


def _mentions(template: str, concept: str) -> bool:
    """Whether captions of `template` name `concept` (style words via {style}, artists via {artist})."""
    attr, _ = concept_kind(concept)
    if concept in world.ARTISTS:
        return "{artist}" in template
    if attr == "style":
        return "{style}" in template
    return True  # colours and shapes appear in every attribute template


def edit_suite(key: str, value: str | None = None, n: int = 40, seed: int = 0) -> list[EvalItem]:
    """Prompts that test the edit KEY -> VALUE on the shapes model.

    Args:
        key: the edited concept (a style word, an artist, a colour or a shape).
        value: the concept it is mapped to (None: removal without a target).
        n: items per group (efficacy, generality, specificity).
        seed: picks the records and the generation seeds.

    Returns:
        3·n EvalItems. Efficacy: training templates naming the key; generality: held-out
        paraphrases naming it; specificity: training templates whose records avoid the key's value
        (every other style, colour and shape).
    """
    attr, removed = concept_kind(key)
    target = concept_kind(value)[1] if value is not None and value in _KINDS else None
    rng = np.random.default_rng(seed)
    seen = world.seen_combinations()

    def pick(templates, want_key: bool) -> list[EvalItem]:
        usable = [t for t in templates if "{entity}" not in t and (_mentions(t, key) if want_key else True)]
        if not usable:
            return []
        items = []
        while len(items) < n:
            shape, colour, style, size = seen[int(rng.integers(len(seen)))]
            rec = world.Record(shape, colour, style, size)
            values = rec.attributes
            if want_key:
                rec = world.Record(**{**{k: values[k] for k in ("shape", "colour", "style", "size")}, attr: removed})
                if world.is_held_out(rec.colour, rec.shape):
                    continue
            elif values[attr] == removed:
                continue
            template = usable[int(rng.integers(len(usable)))]
            expect = {"shape": rec.shape, "colour": rec.colour, "style": rec.style}
            group = "specificity" if not want_key else ("efficacy" if templates is world.TRAIN_TEMPLATES else "generality")
            items.append(
                EvalItem(
                    prompt=world.caption(rec, template),
                    group=group,
                    expect=expect,
                    seed=int(rng.integers(2**31)),
                    removed=(attr, removed) if want_key else None,
                    target=target if want_key else None,
                )
            )
        return items

    return pick(world.TRAIN_TEMPLATES, True) + pick(world.HELD_OUT_TEMPLATES, True) + pick(world.TRAIN_TEMPLATES, False)
