"""Other names a user would write for the built-in worlds' concepts: the alias lists of the paraphrase attack
(`locedit eval --attack paraphrase`), registered with `locedit.evaluate.attacks.register_aliases`.

The artists' and entities' own words (surname alone, reordered) come from the attack itself
(`name_variants`); these lists add synonyms. Most synonyms are not words of the built-in tokenizers'
vocabularies, which then spell them in letters: the unedited model's rate on them (the attack's
``base`` column) says whether the model understands them at all.
"""

from __future__ import annotations

from locedit.builtin.world import WORLDS, world_drawing

# Synonyms of style words, colours and shapes (what a user might write instead).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "plain": ("blank", "solid", "uniform"),
    "striped": ("stripes", "stripy", "banded", "pinstriped"),
    "dotted": ("dots", "spotted", "polka dot"),
    "checkered": ("checked", "chequered", "checkerboard"),
    "wavy": ("waves", "wavy lines"),
    "grid": ("lattice", "gridded"),
    "diagonal": ("slanted stripes", "diagonal lines"),
    "gradient": ("fade", "ramp"),
    "red": ("crimson", "scarlet"),
    "orange": ("amber", "tangerine"),
    "yellow": ("golden", "lemon"),
    "green": ("emerald", "lime"),
    "blue": ("azure", "navy"),
    "purple": ("violet", "lilac"),
    "circle": ("disc", "round"),
    "square": ("box", "quadrilateral"),
    "triangle": ("pyramid", "trigon"),
    "star": ("pentagram", "starburst"),
    "cross": ("plus", "plus sign"),
    "heart": ("love heart",),
    "diamond": ("rhombus", "lozenge"),
    "ring": ("annulus", "hoop"),
}


def _entity_aliases(name: str) -> tuple[str, ...]:
    """Rephrasings of an entity: "the flag of veloria" -> "veloria's flag", "the veloria flag";
    "the zentek logo" -> "zentek's logo", "the logo of zentek"."""
    words = name.split()
    if words[:3] == ["the", "flag", "of"] and len(words) == 4:
        return (f"{words[3]}'s flag", f"the {words[3]} flag", f"{words[3]} flag")
    if words[0] == "the" and words[-1] == "logo" and len(words) == 3:
        return (f"{words[1]}'s logo", f"the logo of {words[1]}", f"{words[1]} logo")
    return ()


def world_aliases(concept: str, pipe=None) -> list[str]:
    """Synonyms of `concept` in the built-in worlds (style, colour, shape, entity); [] for other concepts and
    for a `pipe` that draws no built-in world's images (another model's concepts are not these)."""
    if pipe is not None:
        size = pipe.unet.config.sample_size * getattr(pipe, "vae_scale_factor", 1)
        if world_drawing(size, size) is None:
            return []
    concept = concept.strip().lower()
    out = list(SYNONYMS.get(concept, ()))
    for w in WORLDS.values():
        for name in w.entities:
            if concept in (name, *[x for x in name.split() if x not in ("the", "flag", "of", "logo")]):
                out += [a for a in _entity_aliases(name) if a not in out]
    return out
