"""Judges of an edit's images: did the key go, did everything else stay, item by item.

A judge reads one batch of images into JSON-serialisable observations (`observe`), and compares an
item's observation before the edit with the one after (`outcome`, same seed). Two judges:

- `ClassifierJudge`: attribute labels from a classifier (``builtin``: the built-in model's, registered
  by `locedit.builtin`); an image "shows" a set of attribute values when every label matches.
- `ClipJudge` (``clip:PATH``): CLIP-Score, as the paper scores edits. Efficacy items: the key is
  drawn when the image is closer to ``key_text`` than to ``value_text``; specificity items: kept when
  the CLIP-Score against the prompt drops by at most `tolerance` points after the edit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from locedit.evaluate.suite import EFFICACY_GROUPS, EvalItem, SuiteError
from locedit.scorers.clip import ClipScorer

# CLIP-Score points (100 × cosine) a kept prompt may lose under the clip judge (CLI: locedit eval --tolerance).
CLIP_TOLERANCE = 2.0


@dataclass(frozen=True)
class Outcome:
    """One item's before/after comparison.

    applicable: the before image shows what the group tests (the key for efficacy groups, the
        expected attributes otherwise); items that are not are left out of the rates.
    success: efficacy groups: the key is gone after; other groups: the expected attributes stay.
    to_target: efficacy groups with a target: the after image shows the value concept (else None).
    others_kept: efficacy groups with `expect`: the other attributes, shown before, still shown after.
    """

    applicable: bool
    success: bool
    to_target: bool | None = None
    others_kept: bool | None = None


class Judge:
    name = "judge"

    def check(self, items: Sequence[EvalItem]) -> None:
        """Raise SuiteError when items ask for something this judge cannot tell."""

    def observe(self, images: torch.Tensor, items: Sequence[EvalItem]) -> list[dict]:
        """One observation per image (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def outcome(self, item: EvalItem, before: dict, after: dict) -> Outcome:
        raise NotImplementedError


class ClassifierJudge(Judge):
    """Attribute labels from `predict(images) -> [{attribute: value}]`.

    Args:
        predict: the classifier.
        values: attribute -> the values it can tell apart (suites are checked against them).
    """

    def __init__(
        self, predict: Callable[[torch.Tensor], list[dict[str, str]]], values: dict[str, Sequence[str]], name: str
    ):
        self.predict = predict
        self.values = {a: tuple(v) for a, v in values.items()}
        self.name = name

    def check(self, items: Sequence[EvalItem]) -> None:
        for item in items:
            for field in ("expect", "key", "target"):
                for attr, value in getattr(item, field).items():
                    if attr not in self.values:
                        raise SuiteError(
                            f"item {item.prompt!r}: unknown attribute {attr!r} in {field}; "
                            f"the {self.name} judge knows {', '.join(self.values)}"
                        )
                    if value not in self.values[attr]:
                        raise SuiteError(
                            f"item {item.prompt!r}: {attr} {value!r} is not one the {self.name} judge tells apart "
                            f"({', '.join(self.values[attr])})"
                        )
            if item.group in EFFICACY_GROUPS and not item.key:
                raise SuiteError(
                    f"item {item.prompt!r}: the {self.name} judge needs `key` (attribute values) on efficacy items"
                )

    def observe(self, images: torch.Tensor, items: Sequence[EvalItem]) -> list[dict]:
        return [dict(p) for p in self.predict(images)]

    @staticmethod
    def _shows(labels: dict, want: dict[str, str]) -> bool:
        return all(labels.get(a) == v for a, v in want.items())

    def outcome(self, item: EvalItem, before: dict, after: dict) -> Outcome:
        if item.group in EFFICACY_GROUPS:
            others = item.expect and self._shows(before, item.expect)
            return Outcome(
                applicable=self._shows(before, item.key),
                success=not self._shows(after, item.key),
                to_target=self._shows(after, item.target) if item.target else None,
                others_kept=self._shows(after, item.expect) if others else None,
            )
        return Outcome(applicable=self._shows(before, item.expect), success=self._shows(after, item.expect))


class ClipJudge(Judge):
    """CLIP-Score judge over a local transformers CLIP folder (never a hub name).

    Args:
        path: CLIP folder (CLIPModel weights, tokenizer, optional preprocessor_config.json).
        tolerance: CLIP-Score points (100 × cosine) a specificity prompt may lose and still count as kept.
    """

    def __init__(self, path: str | Path, tolerance: float = CLIP_TOLERANCE, device: torch.device | str = "cpu"):
        self.scorer = ClipScorer(path, device=device)
        self.name = self.scorer.name
        self.tolerance = float(tolerance)

    def check(self, items: Sequence[EvalItem]) -> None:
        for item in items:
            if item.group in EFFICACY_GROUPS and not (item.key_text and item.value_text):
                raise SuiteError(
                    f"item {item.prompt!r}: the CLIP judge needs key_text and value_text on efficacy items"
                )

    def observe(self, images: torch.Tensor, items: Sequence[EvalItem]) -> list[dict]:
        texts = sorted({t for it in items for t in (it.prompt, it.key_text, it.value_text) if t})
        scores = self.scorer.score_texts(images, texts)  # (B, T)
        col = {t: i for i, t in enumerate(texts)}
        out = []
        for b, item in enumerate(items):
            obs = {"prompt": float(scores[b, col[item.prompt]])}
            if item.key_text and item.value_text:
                obs["key"] = float(scores[b, col[item.key_text]])
                obs["value"] = float(scores[b, col[item.value_text]])
            out.append(obs)
        return out

    def outcome(self, item: EvalItem, before: dict, after: dict) -> Outcome:
        if item.group in EFFICACY_GROUPS:
            return Outcome(
                applicable=before["key"] > before["value"],
                success=after["key"] <= after["value"],
                to_target=after["value"] > after["key"],
            )
        return Outcome(applicable=True, success=after["prompt"] >= before["prompt"] - self.tolerance)


# Judge registry: name -> factory(argument after the colon or None, device) -> Judge. `clip` is
# registered here, `builtin` (the built-in model's classifier) by `locedit.builtin`.
JudgeFactory = Callable[[str | None, torch.device | str], Judge]
JUDGES: dict[str, JudgeFactory] = {}
_USAGE: dict[str, str] = {}


def register_judge(name: str, factory: JudgeFactory, usage: str = "") -> None:
    """Make the judge spec `NAME[:ARG]` build `factory(ARG or None, device)`; `usage` is how the spec
    is written in error messages (default: `name`)."""
    JUDGES[name] = factory
    _USAGE[name] = usage or name


def _clip_judge(arg: str | None, device: torch.device | str) -> Judge:
    if not arg:
        raise SuiteError("the clip judge needs a folder: clip:PATH (a local transformers CLIP folder)")
    return ClipJudge(arg, device=device)


register_judge("clip", _clip_judge, usage="clip:PATH")


def make_judge(spec: str, device: torch.device | str = "cpu") -> Judge:
    """A judge from its spec: ``clip:PATH``, ``builtin`` (the built-in model's classifier), or any registered name."""
    name, _, arg = spec.partition(":")
    if name not in JUDGES:
        raise SuiteError(f"unknown judge {spec!r}; use one of: {', '.join(_USAGE.values())}")
    return JUDGES[name](arg or None, device)
