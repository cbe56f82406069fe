"""The library's default DIFF-QUICKFIX edit on the built-in model meets the issue's targets, judged by
the classifier on fixed seeds: efficacy >= 90%, specificity >= 95% (of the prompts the model drew
right before the edit), generality >= 85% (held-out paraphrases). Slow: ~1-2 min per edit on a CPU."""

from __future__ import annotations

import pytest

from locedit import load_pipeline, quickfix
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import edit_suite
from locedit.evaluate.edit_eval import evaluate_edit


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="targets not met yet (README: best specificity 0.91 on the style edit, colour "
                   "edits weak); strict, so this fails loudly once the defaults reach them")
@pytest.mark.parametrize("key, value", [("striped", "plain"), ("karl brenner", "mira solen"), ("red", "blue")])
def test_default_edit_meets_targets(key, value):
    pipe = load_pipeline("builtin:shapes")
    items = edit_suite(key, value, n=32, seed=0)
    results = evaluate_edit(pipe, quickfix(pipe, [(key, value)]), items, ShapesClassifier.load().predict)
    after = results["after"].rates
    print(f"{key} -> {value}: {after}")
    assert after["efficacy"] >= 0.90
    assert after["generality"] >= 0.85
    assert after["specificity_retained"] >= 0.95
