"""Edit evaluation: Wilson intervals, the null control, outcomes and rates per group, judges, and
`evaluate` end to end on a tiny model (pipeline left untouched, progress in increments)."""

from __future__ import annotations

import math

import pytest
import torch

from locedit.evaluate.edit_eval import (
    EvalSettings,
    evaluate_edit,
    null_edit,
    random_delta_like,
    rates_of,
    weight_change,
    wilson,
)
from locedit.evaluate.judges import ClassifierJudge, ClipJudge, Outcome
from locedit.evaluate.suite import EvalItem, SuiteError, check_items, overlap, read_suite, write_suite

VALUES = {"shape": ("circle", "square", "star"), "colour": ("red", "blue"), "style": ("plain", "striped", "dotted")}


def test_wilson_matches_hand_computed_values():
    # 8 of 10: p = 0.8, z = 1.96 -> centre 0.7167, half 0.2266 (Wilson 1927; e.g. Newcombe 1998, table I)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_null_control_has_the_edits_norm_and_random_directions():
    from locedit.edit.edit import Edit

    before = {"a.weight": torch.randn(6, 5), "b.weight": torch.randn(3, 3)}
    delta = {"a.weight": torch.zeros(6, 5), "b.weight": torch.zeros(3, 3)}
    delta["a.weight"][:, 0] = 2.0  # rank 1
    delta["b.weight"][1, 1] = 0.5
    edit = Edit(before, {k: before[k] + delta[k] for k in before}, {"fingerprint": "x"})
    after = random_delta_like(edit, seed=3)
    for name in before:
        r = after[name].double() - before[name].double()
        assert r.norm().item() == pytest.approx(edit.delta(name).norm().item(), rel=1e-5)
        assert abs(torch.nn.functional.cosine_similarity(r.flatten(), edit.delta(name).flatten(), dim=0)) < 0.9
    assert all(torch.equal(after[k], random_delta_like(edit, seed=3)[k]) for k in after)  # seeded
    assert not torch.equal(after["a.weight"], random_delta_like(edit, seed=4)["a.weight"])
    null = null_edit(edit, seed=3)
    assert null.meta["method"] == "null-control" and torch.equal(null.after["a.weight"], after["a.weight"])
    w = weight_change(edit)["tensors"]
    assert w["a.weight"]["rank"] == 1 and w["b.weight"]["rank"] == 1
    assert w["a.weight"]["rel_norm"] == pytest.approx(
        (delta["a.weight"].norm() / before["a.weight"].norm()).item(), rel=1e-6
    )


def test_weight_change_of_biases_and_convolution_kernels():
    """ESD-u and ablate-full edits change biases (1-D) and conv kernels (4-D): a bias change has rank
    1, a kernel change is ranked as an (out, in·k·k) matrix, and the null control keeps their shapes."""
    from locedit.edit.edit import Edit

    before = {"b.bias": torch.randn(8), "c.weight": torch.randn(6, 4, 3, 3)}
    delta = {"b.bias": torch.zeros(8), "c.weight": torch.zeros(6, 4, 3, 3)}
    delta["b.bias"][2] = 1.0
    delta["c.weight"][:, 0, 1, 1] = torch.arange(6.0)  # one input tap, every output: rank 1
    delta["c.weight"][0, 1, 0, 0] = 3.0  # another tap, one output: rank 2 in all
    edit = Edit(before, {k: before[k] + delta[k] for k in before}, {"fingerprint": "x"})
    w = weight_change(edit)["tensors"]
    assert w["b.bias"]["rank"] == 1 and w["c.weight"]["rank"] == 2
    assert w["c.weight"]["shape"] == [6, 4, 3, 3]
    assert {k: v.shape for k, v in random_delta_like(edit).items()} == {k: v.shape for k, v in before.items()}


def _judge():
    return ClassifierJudge(lambda images: [], VALUES, "test")


def test_outcomes_and_rates_by_group():
    judge = _judge()
    eff = EvalItem("p", "efficacy", 0, expect={"shape": "circle"}, key={"style": "striped"}, target={"style": "plain"})
    spec = EvalItem("q", "neighbours", 1, expect={"style": "dotted"})
    items = [eff] * 4 + [spec] * 3
    before = [
        {"shape": "circle", "style": "striped"},  # key drawn, will go to target, others kept
        {"shape": "circle", "style": "striped"},  # key drawn, stays: failure
        {"shape": "square", "style": "striped"},  # key drawn, removed not to target; others not shown before
        {"shape": "circle", "style": "plain"},  # key not drawn before: not applicable
        {"style": "dotted"},
        {"style": "dotted"},
        {"style": "plain"},  # two applicable, one not
    ]
    after = [
        {"shape": "circle", "style": "plain"},
        {"shape": "circle", "style": "striped"},
        {"shape": "star", "style": "dotted"},
        {"shape": "circle", "style": "plain"},
        {"style": "dotted"},
        {"style": "striped"},
        {"style": "dotted"},
    ]
    outcomes = [judge.outcome(it, b, a) for it, b, a in zip(items, before, after)]
    assert outcomes[0] == Outcome(True, True, True, True)
    assert outcomes[2] == Outcome(True, True, False, None)
    assert not outcomes[3].applicable
    rates = rates_of(items, outcomes)
    assert (rates[("efficacy", "removed")].k, rates[("efficacy", "removed")].n) == (2, 3)
    assert (rates[("efficacy", "to_target")].k, rates[("efficacy", "to_target")].n) == (1, 3)
    assert (rates[("efficacy", "others_kept")].k, rates[("efficacy", "others_kept")].n) == (
        2,
        2,
    )  # item 2 had no circle before
    assert (rates[("neighbours", "kept")].k, rates[("neighbours", "kept")].n) == (1, 2)
    assert ("attributes", "kept") not in rates


def test_judge_rejects_unknown_attributes_and_values():
    judge = _judge()
    with pytest.raises(SuiteError, match="unknown attribute 'texture'"):
        judge.check([EvalItem("p", "neighbours", 0, expect={"texture": "rough"})])
    with pytest.raises(SuiteError, match="'hexagon' is not one"):
        judge.check([EvalItem("p", "neighbours", 0, expect={"shape": "hexagon"})])
    with pytest.raises(SuiteError, match="needs `key`"):
        judge.check([EvalItem("p", "efficacy", 0, key_text="a", value_text="b")])


def test_suite_files_roundtrip_and_validation(tmp_path):
    items = [
        EvalItem("a red circle", "neighbours", 3, expect={"colour": "red"}),
        EvalItem("van gogh", "efficacy", 4, key_text="a painting by van gogh", value_text="a painting"),
    ]
    write_suite(items, tmp_path / "s.jsonl")
    assert read_suite(tmp_path / "s.jsonl") == items
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "group": "specificity", "seed": 1}\n')
    with pytest.raises(SuiteError, match="unknown group 'specificity'"):
        read_suite(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "group": "neighbours"}\n')
    with pytest.raises(SuiteError, match="missing field 'seed'"):
        read_suite(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SuiteError, match="empty"):
        read_suite(tmp_path / "empty.jsonl")
    with pytest.raises(SuiteError, match="neither `key` nor `key_text`"):
        check_items([EvalItem("x", "generality", 0)])
    assert overlap(items, ["A  Red circle", "something else"]) == ["a red circle"]


def test_clip_judge_scores_texts_and_judges(tiny_clip):
    judge = ClipJudge(tiny_clip, tolerance=1.0)
    items = [
        EvalItem("a red cat", "neighbours", 0),
        EvalItem("a painting by van gogh", "efficacy", 1, key_text="van gogh", value_text="a painting"),
    ]
    images = torch.rand(2, 3, 32, 32)
    obs = judge.observe(images, items)
    scores = judge.scorer.score_texts(images, ["a red cat", "van gogh", "a painting"])
    assert obs[0]["prompt"] == pytest.approx(float(scores[0, 0])) and "key" not in obs[0]
    assert obs[1]["key"] == pytest.approx(float(scores[1, 1])) and obs[1]["value"] == pytest.approx(float(scores[1, 2]))
    assert judge.outcome(items[0], {"prompt": 20.0}, {"prompt": 19.5}).success
    assert not judge.outcome(items[0], {"prompt": 20.0}, {"prompt": 18.5}).success
    o = judge.outcome(items[1], {"prompt": 0, "key": 25.0, "value": 20.0}, {"prompt": 0, "key": 19.0, "value": 21.0})
    assert o.applicable and o.success and o.to_target
    assert not judge.outcome(
        items[1], {"prompt": 0, "key": 19.0, "value": 20.0}, {"prompt": 0, "key": 1, "value": 2}
    ).applicable
    with pytest.raises(SuiteError, match="key_text and value_text"):
        judge.check([EvalItem("x", "efficacy", 0, key={"style": "plain"})])


def test_evaluate_edit_end_to_end_on_a_tiny_model(load_tiny, tiny_clip):
    from locedit import quickfix
    from locedit.models import text_encoders

    pipe = load_tiny("sd1")
    weight = text_encoders(pipe)[0].module("attn_out", 0).weight
    original = weight.detach().clone()
    edit = quickfix(pipe, [("van gogh", "painting")])
    items = [
        EvalItem("a painting by van gogh", "efficacy", 0, key_text="van gogh", value_text="a painting"),
        EvalItem("a photo of a cat", "attributes", 1),
        EvalItem("a photo of a dog", "attributes", 2),
    ]
    steps: list[int] = []
    report = evaluate_edit(
        pipe, edit, items, ClipJudge(tiny_clip), EvalSettings(steps=1, batch=2), progress=steps.append
    )
    assert sum(steps) == 3 * len(items) and all(s > 0 for s in steps)  # increments over before, after, null
    assert torch.equal(weight, original)  # the edit and the null control were reverted
    assert set(report.observations) == {"before", "after", "null"}
    assert report.images["before"].shape[0] == 3
    assert set(report.rates["after"]) == set(report.rates["null"])
    w = report.weight
    assert w["output_change_prompts"] == 2 and w["output_change_max"] >= w["output_change_mean"] > 0
    assert not math.isnan(report.specificity())
    # reusing the before images gives the same after-observations
    again = evaluate_edit(
        pipe, edit, items, ClipJudge(tiny_clip), EvalSettings(steps=1, batch=2, null=False), baseline=report
    )
    assert again.observations["after"] == report.observations["after"]
