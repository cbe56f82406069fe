"""What the built-in shapes model plugs into locedit's registries: the ``builtin`` scorer (tracing),
judge and suite (edit evaluation), all from the world's classifier and generator.

Imported by ``locedit.builtin`` (and so by ``import locedit``): the layers below never import this
package, they only look the names up in their registries.
"""

from __future__ import annotations

import torch

from locedit.builtin import world
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import suite_for_edit
from locedit.evaluate.judges import ClassifierJudge, Judge, register_judge
from locedit.evaluate.suite import SuiteError, register_suite
from locedit.probes import Probe
from locedit.scorers import Scorer, ScorerError, no_argument, register_scorer

# Probe attribute -> classifier attribute of the built-in shapes world.
_BUILTIN_ATTRIBUTES = {"color": "colour", "object": "shape"}


class BuiltinScorer(Scorer):
    """The built-in shapes model's classifier: 1 when the image shows the probe's attribute value.

    The value is the probe's `value`, or else what the classifier sees in the clean image.

    Args:
        classifier: anything with `predict(images) -> [{attribute: value}]`; None loads the shipped
            ShapesClassifier.
    """

    name = "builtin"
    min_drop = 0.5  # the label must flip

    def __init__(self, classifier=None):
        self.classifier = ShapesClassifier.load() if classifier is None else classifier

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        attribute = _BUILTIN_ATTRIBUTES.get(probe.attribute, probe.attribute)
        preds = self.classifier.predict(images.detach().float().cpu())
        if preds and attribute not in preds[0]:
            raise ScorerError(
                f"the built-in classifier has no attribute {probe.attribute!r} (it knows {', '.join(preds[0])})"
            )
        target = probe.value or self.classifier.predict(reference[None].detach().float().cpu())[0][attribute]
        return torch.tensor([1.0 if p[attribute] == target else 0.0 for p in preds], dtype=torch.float64)


def builtin_judge(arg: str | None = None, device: torch.device | str = "cpu") -> Judge:
    """The classifier judge of the shapes world (colour, shape, style, size labels)."""
    if arg:
        raise SuiteError(f"the builtin judge takes no argument (got builtin:{arg}); write builtin")
    values = {"colour": world.COLOURS, "shape": world.SHAPES, "style": world.STYLES, "size": world.SIZES}
    return ClassifierJudge(ShapesClassifier.load().predict, values, "builtin")


register_scorer("builtin", lambda arg, device: BuiltinScorer(), check=no_argument("builtin"))
register_judge("builtin", builtin_judge)
register_suite("builtin", suite_for_edit)
