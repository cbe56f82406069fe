"""Image scorers for causal tracing (and the CLIP-Score the edit judges reuse): interface, registry,
and the model-free `pixel` and `clip:PATH` scorers. The built-in model's `builtin` scorer is
registered by `locedit.builtin`."""

from locedit.scorers.base import (
    SCORERS,
    Scorer,
    ScorerEntry,
    ScorerError,
    check_scorer_spec,
    make_scorer,
    no_argument,
    register_scorer,
)
from locedit.scorers.clip import ClipScorer
from locedit.scorers.pixel import PixelScorer

__all__ = [
    "SCORERS",
    "ClipScorer",
    "PixelScorer",
    "Scorer",
    "ScorerEntry",
    "ScorerError",
    "check_scorer_spec",
    "make_scorer",
    "no_argument",
    "register_scorer",
]
