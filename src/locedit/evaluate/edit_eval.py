"""Edit evaluation: efficacy, generality and specificity of an edit, judged by an attribute classifier.

A suite is a list of EvalItems. Each names a prompt, the attribute values the prompt asks for, and
its group: "efficacy" (captions with the edited concept, in training templates), "generality" (the
same in held-out paraphrases) or "specificity" (captions without it). For efficacy/generality items,
`removed` is the (attribute, value) that must no longer be drawn; every other asked-for attribute
should stay. Images are generated with fixed seeds before and after the edit, so the two are
comparable image by image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from locedit.evaluate.generate import generate

GROUPS = ("efficacy", "generality", "specificity")


@dataclass(frozen=True)
class EvalItem:
    prompt: str
    group: str  # one of GROUPS
    expect: dict[str, str]  # attribute -> value the prompt asks for
    seed: int
    removed: tuple[str, str] | None = None  # (attribute, value) the edit must remove (efficacy/generality)
    target: str | None = None  # value the removed attribute should become, if the edit maps to one


@dataclass
class EvalResult:
    """Rates in [0, 1] per group (see `summary`), plus the raw predictions."""

    rates: dict[str, float]
    predictions: list[dict[str, str]] = field(default_factory=list)
    images: torch.Tensor | None = None  # (B, 3, H, W) in [0, 1], one per item


def score_predictions(items: list[EvalItem], predictions: list[dict[str, str]]) -> dict[str, float]:
    """Rates from classifier predictions.

    Returns keys (present when the group has items):
        efficacy / generality: share of items where the removed value is no longer drawn;
        efficacy_to_target / generality_to_target: share drawn as the target value;
        efficacy_others_kept: share where every other asked-for attribute is still drawn;
        specificity: share of specificity items with every asked-for attribute drawn;
        specificity_<attr>: the same per attribute.
    """
    rates: dict[str, float] = {}
    for group in ("efficacy", "generality"):
        pairs = [(it, p) for it, p in zip(items, predictions) if it.group == group]
        if not pairs:
            continue
        n = len(pairs)
        rates[group] = sum(p[it.removed[0]] != it.removed[1] for it, p in pairs) / n
        if all(it.target for it, _ in pairs):
            rates[f"{group}_to_target"] = sum(p[it.removed[0]] == it.target for it, p in pairs) / n
        rates[f"{group}_others_kept"] = sum(
            all(p[a] == v for a, v in it.expect.items() if a != it.removed[0]) for it, p in pairs
        ) / n
    spec = [(it, p) for it, p in zip(items, predictions) if it.group == "specificity"]
    if spec:
        rates["specificity"] = sum(all(p[a] == v for a, v in it.expect.items()) for it, p in spec) / len(spec)
        for attr in sorted({a for it, _ in spec for a in it.expect}):
            asked = [(it, p) for it, p in spec if attr in it.expect]
            rates[f"specificity_{attr}"] = sum(p[attr] == it.expect[attr] for it, p in asked) / len(asked)
    return rates


def evaluate_items(
    pipe,
    items: list[EvalItem],
    classify: Callable[[torch.Tensor], list[dict[str, str]]],
    steps: int = 20,
    guidance: float = 5.0,
    batch: int = 64,
    progress=None,
) -> EvalResult:
    """Generate every item's image with its seed, classify, and score (see `score_predictions`)."""
    images = generate(pipe, [it.prompt for it in items], [it.seed for it in items], steps, guidance, batch, progress)
    predictions = classify(images)
    return EvalResult(score_predictions(items, predictions), predictions, images)


def retention(items: list[EvalItem], before: list[dict[str, str]], after: list[dict[str, str]]) -> dict[str, float]:
    """Image-by-image comparison of the same seeds before and after an edit.

    Returns:
        specificity_retained: of the specificity items drawn fully as asked before the edit, the
            share still drawn fully as asked after it (the edit cannot be blamed for what the model
            got wrong on its own);
        efficacy_removed / generality_removed: of the items that drew the removed value before,
            the share that no longer draw it.
    """
    out: dict[str, float] = {}
    spec = [(it, b, a) for it, b, a in zip(items, before, after) if it.group == "specificity"
            and all(b[k] == v for k, v in it.expect.items())]
    if spec:
        out["specificity_retained"] = sum(all(a[k] == v for k, v in it.expect.items()) for it, _, a in spec) / len(spec)
    for group in ("efficacy", "generality"):
        drawn = [(it, a) for it, b, a in zip(items, before, after) if it.group == group and b[it.removed[0]] == it.removed[1]]
        if drawn:
            out[f"{group}_removed"] = sum(a[it.removed[0]] != it.removed[1] for it, a in drawn) / len(drawn)
    return out


def evaluate_edit(pipe, edit, items, classify, progress=None, **kwargs) -> dict[str, EvalResult]:
    """{"before": ..., "after": ...}: the suite on `pipe` without and with `edit` (reverted after).

    The "after" rates also hold the before/after comparisons of `retention`. `progress`, if given,
    is called with the number of images generated so far, out of 2 * len(items).
    """
    after_progress = None if progress is None else (lambda n: progress(len(items) + n))
    before = evaluate_items(pipe, items, classify, progress=progress, **kwargs)
    edit.apply(pipe)
    try:
        after = evaluate_items(pipe, items, classify, progress=after_progress, **kwargs)
    finally:
        edit.revert(pipe)
    after.rates.update(retention(items, before.predictions, after.predictions))
    return {"before": before, "after": after}
