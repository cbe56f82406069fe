"""The library's default DIFF-QUICKFIX edit on the built-in model against issue #8's targets, on the
held-out `test` suite (prompts disjoint from everything the edit was fitted on), judged image by
image by the classifier: efficacy >= 0.90, generality >= 0.85, and >= 0.95 kept in every
specificity group (neighbours, attributes, entities). Slow: about a minute per edit on a CPU.

A case whose targets are not met is a strict xfail with the measured numbers
(benchmarks/edit_quality.py), so it fails loudly once the defaults reach them.
"""

from __future__ import annotations

import pytest

from locedit import eval_edit, load_pipeline, quickfix
from locedit.evaluate.edit_eval import EvalSettings
from locedit.evaluate.suite import SuiteSettings

CASES = {
    "style": ("striped", "plain"),  # remove a style word
    "artist": ("karl brenner", "mira solen"),  # remove a two-word artist
    "shape": ("circle", "square"),  # replace an object
    "fact": ("veloria", "norland"),  # update a fact: the flag of veloria now looks like norland's
    "colour": ("red", "blue"),
}
TARGETS = {
    ("efficacy", "removed"): 0.90,
    ("generality", "removed"): 0.85,
    ("neighbours", "kept"): 0.95,
    ("attributes", "kept"): 0.95,
    ("entities", "kept"): 0.95,
}


def _not_met(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"target not met yet: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            "style", marks=_not_met("entities kept 0.90 (27/30; null control 1.00), benchmarks/edit_quality.py")
        ),
        "artist",
        "shape",
        "fact",
        pytest.param(
            "colour", marks=_not_met("entities kept 0.87 (26/30; null control 1.00), benchmarks/edit_quality.py")
        ),
    ],
)
def test_default_edit_meets_targets_on_held_out_prompts(case):
    key, value = CASES[case]
    pipe = load_pipeline("builtin:shapes")
    edit = quickfix(pipe, [(key, value)])
    report, info = eval_edit(
        pipe, edit, "builtin", "builtin", EvalSettings(null=False), SuiteSettings(per_group=30, split="test")
    )
    assert info["overlap"] == []
    rates = report.rates["after"]
    measured = {f"{g}.{m}": round(r.rate, 3) for (g, m), r in rates.items()}
    print(f"{key} -> {value}: {measured}")
    for (group, metric), target in TARGETS.items():
        if (group, metric) in rates:
            assert rates[(group, metric)].n >= 10, f"{group}: only {rates[(group, metric)].n} items judged"
            assert rates[(group, metric)].rate >= target, (
                f"{group}.{metric} {rates[(group, metric)].rate:.2f} < {target}"
            )
