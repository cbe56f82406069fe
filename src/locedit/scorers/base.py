"""The scorer interface and the registry that turns a `--scorer` spec ("pixel", "clip:PATH", ...) into one.

A scorer maps a batch of generated images and the probe they were generated for to one number per
image, higher = more of the probed attribute. Tracing compares the restored images' scores with the
clean and corrupted ones, so only differences of scores matter.

Scorers register themselves by name (`register_scorer`): `pixel` and `clip` in this package, `builtin`
in `locedit.builtin` (which `import locedit` loads), third-party scorers wherever they are imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


# factory(argument after the colon or None, device) -> Scorer
ScorerFactory = Callable[[str | None, torch.device | str], Scorer]


@dataclass(frozen=True)
class ScorerEntry:
    """A registered scorer: how to build it, and how to check its argument without loading anything."""

    factory: ScorerFactory
    check: Callable[[str | None], None] | None = None  # raises ScorerError for a bad argument; None = no check
    usage: str = ""  # how the spec is written, for error messages; "" = the bare name


SCORERS: dict[str, ScorerEntry] = {}


def register_scorer(
    name: str, factory: ScorerFactory, check: Callable[[str | None], None] | None = None, usage: str = ""
) -> None:
    """Make `--scorer NAME[:ARG]` build `factory(ARG or None, device)`.

    `check(ARG or None)` validates the argument cheaply (before any model loads); `usage` is how the
    spec is written in error messages (default: `name`).
    """
    SCORERS[name] = ScorerEntry(factory, check, usage or name)


def no_argument(name: str) -> Callable[[str | None], None]:
    """A `check` for scorers that take no argument after the colon."""

    def check(arg: str | None) -> None:
        if arg:
            raise ScorerError(f"scorer {name!r} takes no argument (got {name}:{arg}); write --scorer {name}")

    return check


def check_scorer_spec(spec: str) -> None:
    """Cheap validation of a --scorer spec without loading anything (raises ScorerError)."""
    name, _, arg = spec.partition(":")
    if name not in SCORERS:
        known = ", ".join(entry.usage for entry in SCORERS.values())
        raise ScorerError(f"unknown scorer {spec!r}; use one of: {known}")
    entry = SCORERS[name]
    if entry.check is not None:
        entry.check(arg or None)


def make_scorer(spec: str | Scorer, device: torch.device | str = "cpu") -> Scorer:
    """A scorer from its spec ("pixel", "clip:PATH", "builtin", or any registered name); a Scorer is returned as is."""
    if isinstance(spec, Scorer):
        return spec
    check_scorer_spec(spec)
    name, _, arg = spec.partition(":")
    return SCORERS[name].factory(arg or None, device)
