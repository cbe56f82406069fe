"""Evaluation suites of an edit: items (prompt, group, seed, what the image must show), JSONL files,
and the check that a suite shares no caption with what an edit was fitted on.

Groups (each reported on its own, image by image, the same seed before and after the edit):

- ``efficacy``: the key in the phrasings the edit was fitted on (its templates); must no longer be drawn.
- ``generality``: the key in held-out phrasings; must no longer be drawn.
- ``neighbours``: other values of the key's attribute (other styles, other artists, other colours);
  must keep them.
- ``attributes``: prompts without the key; the attributes other than the edited one must stay.
- ``entities``: named entities (facts) that do not stand for the key's value; must stay.
- ``other_route``: prompts that ask for the key's *value* without naming the key (after removing an
  artist, the style word itself); reported on their own, not part of specificity: whether they should
  change is the user's choice.

A JSONL suite has one object per line with the fields of `EvalItem`; ``expect``, ``key`` and
``target`` map attribute names to values (for the ``builtin`` judge: colour, shape, style, size;
"color" is read as "colour") and ``key_text`` /
``value_text`` are the texts the ``clip:PATH`` judge compares efficacy images with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from locedit.errors import LoceditError
from locedit.io import atomic_path, read_jsonl
from locedit.options import is_int, option, require, require_choice
from locedit.probes.probes import attribute_name

EFFICACY_GROUPS = ("efficacy", "generality")
SPECIFICITY_GROUPS = ("neighbours", "attributes", "entities")
REPORTED_GROUPS = ("other_route",)
GROUPS = EFFICACY_GROUPS + SPECIFICITY_GROUPS + REPORTED_GROUPS


class SuiteError(LoceditError, ValueError):
    """A suite that cannot be evaluated (unknown group, missing field, empty, overlapping the fit)."""


@dataclass(frozen=True)
class EvalItem:
    """One prompt of a suite.

    Attributes:
        prompt: the text given to the pipeline.
        group: one of GROUPS.
        seed: drives the initial latent; the same before and after the edit.
        expect: attribute -> value the image must show (specificity groups: what must be kept;
            efficacy groups: the other attributes, which must be kept while the key goes).
        key: efficacy groups: attribute -> value that together mean "the key is drawn".
        target: efficacy groups: attribute -> value of the edit's value concept ({} for a removal).
        key_text, value_text: efficacy groups, for the CLIP judge: texts naming the key concept and
            the value concept ("a painting by van gogh", "a painting").
    """

    prompt: str
    group: str
    seed: int
    expect: dict[str, str] = field(default_factory=dict)
    key: dict[str, str] = field(default_factory=dict)
    target: dict[str, str] = field(default_factory=dict)
    key_text: str | None = None
    value_text: str | None = None

    def __post_init__(self):
        for name in ("expect", "key", "target"):  # "color" -> "colour" (probes.ATTRIBUTE_ALIASES)
            mapping = getattr(self, name)
            if isinstance(mapping, dict):
                object.__setattr__(
                    self, name, {attribute_name(a) if isinstance(a, str) else a: v for a, v in mapping.items()}
                )

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}


def check_items(items: Sequence[EvalItem]) -> None:
    """Raise SuiteError for an empty suite, an unknown group or an efficacy item without a key."""
    if not items:
        raise SuiteError("the suite is empty; give at least one item (see `locedit eval --help` for the JSONL fields)")
    for i, item in enumerate(items):
        if item.group not in GROUPS:
            raise SuiteError(
                f"item {i} ({item.prompt!r}) has unknown group {item.group!r}; use one of {', '.join(GROUPS)}"
            )
        if not item.prompt.strip():
            raise SuiteError(f"item {i} has an empty prompt")
        if item.group in EFFICACY_GROUPS and not (item.key or item.key_text):
            raise SuiteError(
                f"item {i} ({item.prompt!r}) is in group {item.group!r} but says neither `key` nor `key_text`"
            )


def _item_from_json(obj: dict, where: str) -> EvalItem:
    if not isinstance(obj, dict):
        raise SuiteError(f"{where}: not a JSON object")
    unknown = set(obj) - set(EvalItem.__dataclass_fields__)
    if unknown:
        raise SuiteError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(EvalItem.__dataclass_fields__)}"
        )
    for name in ("prompt", "group", "seed"):
        if name not in obj:
            raise SuiteError(f"{where}: missing field {name!r}")
    if not isinstance(obj["seed"], int) or isinstance(obj["seed"], bool):
        raise SuiteError(f"{where}: seed must be an integer (got {obj['seed']!r})")
    for name in ("expect", "key", "target"):
        value = obj.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise SuiteError(f"{where}: {name} must map attribute names to values (strings)")
    return EvalItem(**obj)


def read_suite(path: str | Path) -> list[EvalItem]:
    """Items of a JSONL suite file (blank and "#" lines skipped); SuiteError names the bad line."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"suite file {str(path)!r} does not exist")
    items = [_item_from_json(obj, where) for obj, where in read_jsonl(file, SuiteError)]
    check_items(items)
    return items


def write_suite(items: Iterable[EvalItem], path: str | Path) -> None:
    """Write items as JSONL, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(it.to_json(), sort_keys=True) + "\n" for it in items))


@dataclass
class SuiteSettings:
    """How a generated suite is drawn (CLI: `locedit eval` --per-group, --seed, --split)."""

    # Prompts per group: 40 gives a Wilson 95% interval of about ±0.1 at a rate of 0.8.
    per_group: int = option(40, parse=int, metavar="N", help="generated suite: prompts per group")
    # Seed of the records drawn and of each prompt's generation seed.
    seed: int = option(0, parse=int, help="generated suite: seed of the records and generation seeds")
    # Which held-out phrasings: "dev" chose locedit's defaults, "test" is for reporting only.
    split: str = option(
        "test", choices=("test", "dev"), help="generated suite: held-out phrasings (dev tunes, test reports)"
    )

    def __post_init__(self):
        require(self, "per_group", is_int(self.per_group, 1), "a positive integer")
        require(self, "seed", is_int(self.seed, 0), "a non-negative integer")
        require_choice(self, "split", ("test", "dev"))


# Generated suites: name -> factory(edit, per_group, seed, split, pipe) -> items, for suites a model's world
# can draw for any edit of it. `builtin` (the built-in shapes world) is registered by `locedit.builtin`.
SuiteFactory = Callable[..., list[EvalItem]]
SUITES: dict[str, SuiteFactory] = {}


def register_suite(name: str, factory: SuiteFactory) -> None:
    """Make the suite name `name` build `factory(edit, per_group=..., seed=..., split=..., pipe=...)`."""
    SUITES[name] = factory


def make_suite(name: str, edit, settings: SuiteSettings | None = None, pipe=None) -> list[EvalItem]:
    """The generated suite `name` for `edit`, drawn as `settings` say, for the model `pipe` (None: the
    suite's default model)."""
    if name not in SUITES:
        raise SuiteError(f"unknown suite {name!r}; give a JSONL suite file, or one of: {', '.join(SUITES) or 'none'}")
    s = settings or SuiteSettings()
    return SUITES[name](edit, per_group=s.per_group, seed=s.seed, split=s.split, pipe=pipe)


def normalize_caption(text: str) -> str:
    """Lower case, single spaces: the form in which fit and evaluation captions are compared."""
    return " ".join(text.lower().split())


def overlap(items: Sequence[EvalItem], fit_captions: Iterable[str]) -> list[str]:
    """Prompts of `items` that are also captions the edit was fitted on (normalized), sorted."""
    fitted = {normalize_caption(c) for c in fit_captions}
    return sorted({it.prompt for it in items if normalize_caption(it.prompt) in fitted})
