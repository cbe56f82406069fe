"""The library's default DIFF-QUICKFIX edit on the built-in model against the issue's targets, judged by
the classifier on fixed seeds: efficacy >= 90%, specificity >= 95% (of the prompts the model drew
right before the edit), generality >= 85% (held-out paraphrases). Slow: ~1 min per edit on a CPU.

Cases whose specificity target is not met yet are strict xfails with the measured number
(benchmarks/edit_quality.py), so they fail loudly once the defaults reach them.
"""

from __future__ import annotations

import pytest

from locedit import load_pipeline, quickfix
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import edit_suite
from locedit.evaluate.edit_eval import evaluate_edit

OTHER_ARTISTS = ["lena dupois", "ivo marek", "mira solen"]
OTHER_COLOURS = ["yellow", "green", "purple", "blue"]


def _not_met(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"specificity target not met yet: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, value, preserve",
    [
        pytest.param("striped", "plain", [], id="style-default"),
        pytest.param("red", "blue", [], id="colour-default", marks=_not_met("0.91 measured")),
        pytest.param("karl brenner", "mira solen", [], id="artist-default", marks=_not_met("0.41 measured")),
        pytest.param("red", "blue", OTHER_COLOURS, id="colour-preserve"),
        pytest.param("karl brenner", "mira solen", OTHER_ARTISTS, id="artist-preserve", marks=_not_met("0.94 measured")),
    ],
)
def test_default_edit_meets_targets(key, value, preserve):
    pipe = load_pipeline("builtin:shapes")
    items = edit_suite(key, value, n=32, seed=0)
    edit = quickfix(pipe, [(key, value)], preserve=preserve)
    after = evaluate_edit(pipe, edit, items, ShapesClassifier.load().predict)["after"].rates
    print(f"{key} -> {value} (preserve {preserve}): {after}")
    assert after["efficacy"] >= 0.90
    assert after["generality"] >= 0.85
    assert after["specificity_retained"] >= 0.95
