"""Edit evaluation rates from classifier predictions, and the shapes world's edit suites."""

from __future__ import annotations

import pytest

from locedit.evaluate.edit_eval import EvalItem, score_predictions


def test_rates_count_what_they_claim():
    asked = {"shape": "circle", "colour": "red", "style": "striped"}
    items = [
        EvalItem("a red circle on a striped background", "efficacy", asked, 0, ("style", "striped"), "plain"),
        EvalItem("a red circle on a striped background", "efficacy", asked, 1, ("style", "striped"), "plain"),
        EvalItem("an image of a red circle on a striped background", "generality", asked, 2, ("style", "striped"), "plain"),
        EvalItem("a red circle on a dotted background", "specificity", {**asked, "style": "dotted"}, 3),
        EvalItem("a blue star on a plain background", "specificity", {"shape": "star", "colour": "blue", "style": "plain"}, 4),
    ]
    predictions = [
        {"shape": "circle", "colour": "red", "style": "plain"},  # removed, to target, others kept
        {"shape": "square", "colour": "red", "style": "dotted"},  # removed, not to target, shape lost
        {"shape": "circle", "colour": "red", "style": "striped"},  # not removed
        {"shape": "circle", "colour": "red", "style": "dotted"},  # kept
        {"shape": "star", "colour": "blue", "style": "dotted"},  # style lost
    ]
    rates = score_predictions(items, predictions)
    assert rates["efficacy"] == 1.0
    assert rates["efficacy_to_target"] == 0.5
    assert rates["efficacy_others_kept"] == 0.5
    assert rates["generality"] == 0.0
    assert rates["specificity"] == 0.5
    assert rates["specificity_style"] == 0.5 and rates["specificity_colour"] == 1.0


def test_retention_compares_the_same_seeds():
    from locedit.evaluate.edit_eval import retention

    asked = {"shape": "circle", "colour": "red", "style": "dotted"}
    items = [EvalItem("p", "specificity", asked, i) for i in range(3)] + [
        EvalItem("q", "efficacy", {**asked, "style": "striped"}, 9, ("style", "striped"), "plain")
    ]
    ok, wrong = dict(asked), {**asked, "shape": "star"}
    before = [ok, ok, wrong, {**asked, "style": "striped"}]
    after = [ok, wrong, ok, {**asked, "style": "plain"}]
    rates = retention(items, before, after)
    assert rates["specificity_retained"] == 0.5  # of the two right before, one still right
    assert rates["efficacy_removed"] == 1.0


def test_shapes_suite_groups():
    pytest.importorskip("locedit.builtin.world")
    from locedit.builtin.edit_suite import concept_kind, edit_suite

    items = edit_suite("karl brenner", "mira solen", n=10)
    groups = [it.group for it in items]
    assert groups.count("efficacy") == groups.count("generality") == groups.count("specificity") == 10
    for it in items:
        if it.group == "specificity":
            assert it.expect["style"] != "striped" and "karl brenner" not in it.prompt
        else:
            assert "karl brenner" in it.prompt and it.removed == ("style", "striped") and it.target == "plain"
    assert concept_kind("red") == ("colour", "red")
    with pytest.raises(ValueError, match="not a concept"):
        concept_kind("van gogh")


def test_evaluate_edit_reports_progress_over_both_runs_and_reverts(load_tiny):
    import torch

    from locedit import quickfix
    from locedit.evaluate.edit_eval import evaluate_edit

    from locedit.models import text_encoders

    pipe = load_tiny("sd1")
    weight = text_encoders(pipe)[0].module("attn_out", 0).weight
    before = weight.detach().clone()
    items = [EvalItem(f"a photo of a cat {i}", "specificity", {"shape": "x"}, i) for i in range(3)]
    seen: list[int] = []
    results = evaluate_edit(
        pipe, quickfix(pipe, [("van gogh", "painting")]), items, lambda images: [{"shape": "x"}] * len(images),
        steps=1, batch=2, progress=seen.append,
    )
    assert seen == [2, 3, 5, 6]  # images done, before then after, out of 2 * len(items)
    assert results["after"].rates["specificity_retained"] == 1.0
    assert torch.equal(weight, before)  # reverted
