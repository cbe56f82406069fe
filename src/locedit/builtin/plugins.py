"""What the built-in models plug into locedit's registries: the ``builtin`` scorer (tracing), judge,
suite and attack aliases (edit evaluation), all from the worlds' classifiers and generators.

One scorer and one judge serve every built-in world: a batch of images is read by the classifier of
the world that draws images of its size (32×32: shapes, 48×48: scenes), or of the world a spec
forces (``builtin:shapes``, ``builtin:scenes``; images of another size are then resized), or by the
classifier a spec points to (``builtin:PATH``: a model folder the recipe exported, which holds its
``classifier.safetensors``, or that file itself; its world is the one whose classifier it fits).

Imported by ``locedit.builtin`` (and so by ``import locedit``): the layers below never import this
package, they only look the names up in their registries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from locedit.builtin import classifier as clf
from locedit.builtin.attacks import world_aliases
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import suite_for_edit
from locedit.builtin.world import WORLDS, World, world_drawing
from locedit.errors import LoceditError
from locedit.evaluate.attacks import register_aliases
from locedit.evaluate.judges import ClassifierJudge, Judge, register_judge
from locedit.evaluate.suite import SuiteError, register_suite
from locedit.models.loading import BUILTIN_MODELS
from locedit.probes import Probe
from locedit.scorers import Scorer, ScorerError, register_scorer

# Probe attribute -> classifier attribute of the built-in worlds ("color" is read as "colour" by Probe).
_BUILTIN_ATTRIBUTES = {"color": "colour", "object": "shape"}


def classifier_path(w: World) -> Path:
    """Where world ``w``'s classifier weights ship: next to classifier.py for shapes, inside the model folder
    (``<package>/builtin/<world>/classifier.safetensors``) for the others."""
    if w.name == "shapes":
        return clf.WEIGHTS
    folder = BUILTIN_MODELS.get(w.name, clf.WEIGHTS.parent / w.name)
    return folder / "classifier.safetensors"


def load_classifier(w: World, error: type[LoceditError] = ScorerError) -> ShapesClassifier:
    """The shipped classifier of world ``w``; raises ``error`` naming the fix when its weights are absent."""
    path = classifier_path(w)
    if not path.is_file():
        raise error(
            f"the classifier of the built-in {w.name} world is not installed ({str(path)!r} is missing); "
            f"train it with `python -m locedit.builtin.train --model {w.name} --out DIR --export {path.parent}`, "
            f"or point the scorer/judge at a folder the recipe exported (builtin:DIR), or install a locedit that "
            f"ships builtin:{w.name}"
        )
    return ShapesClassifier.load(path, w)


def classifier_from_path(path: str | Path, error: type[LoceditError] = ScorerError) -> ShapesClassifier:
    """The classifier in ``path`` (a model folder holding ``classifier.safetensors``, or the file), for the
    built-in world whose classifier's tensors it fits; raises ``error`` naming the problem otherwise."""
    from safetensors.torch import load_file

    file = _classifier_file(path, error)
    state = load_file(str(file))
    for w in WORLDS.values():
        net = clf.ShapesCNN(w)
        expected = net.state_dict()
        if expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in state):
            net.load_state_dict(state)
            return ShapesClassifier(net, w)
    raise error(f"{str(file)!r} is not the classifier of a built-in world ({', '.join(WORLDS)}): its tensors differ")


def _classifier_file(path: str | Path, error: type[LoceditError]) -> Path:
    """The classifier file ``builtin:PATH`` names (PATH itself, or PATH/classifier.safetensors for a folder);
    raises ``error`` naming the fix when it does not exist."""
    file = Path(path) / "classifier.safetensors" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise error(
            f"no built-in classifier at {str(file)!r} (builtin:{path}); give a model folder exported by "
            "`python -m locedit.builtin.train --export DIR` (it holds classifier.safetensors) or that file"
        )
    return file


def _is_path(arg: str | None) -> bool:
    """Whether a builtin spec's argument names a classifier path rather than a world."""
    return bool(arg) and arg not in WORLDS and ("/" in arg or "\\" in arg or Path(arg).exists())


class WorldClassifiers:
    """The built-in worlds' classifiers, loaded on first use, and which one reads a batch of images.

    Args:
        classifiers: classifiers to use instead of the shipped ones, each for its ``.world`` (anything with
            ``world``, ``values`` and ``predict_proba(images)``, like ShapesClassifier).
        world: name of the world every batch is read as (images resized to it); None picks the world
            whose ``image_size`` is the images' size.
        error: the error class raised for images no world draws or a classifier that is not installed.
    """

    def __init__(self, classifiers: Iterable = (), world: str | None = None, error: type[LoceditError] = ScorerError):
        if world is not None and world not in WORLDS:
            raise error(f"unknown built-in world {world!r}; use one of {', '.join(WORLDS)}")
        self.forced = WORLDS[world] if world is not None else None
        self.error = error
        self._loaded = {c.world.name: c for c in classifiers}

    def world_of(self, images: torch.Tensor) -> World:
        """The world that reads ``images`` (B, 3, H, W): the forced one, or the one drawing H×W images."""
        if self.forced is not None:
            return self.forced
        h, w = images.shape[-2:]
        found = world_drawing(h, w)
        if found is not None:
            return found
        sizes = ", ".join(f"{x.name} {x.image_size}×{x.image_size}" for x in WORLDS.values())
        raise self.error(
            f"no built-in world draws {h}×{w} images ({sizes}); give builtin:WORLD (one of {', '.join(WORLDS)}) "
            "to read them as that world's (resized), or use another scorer/judge"
        )

    def classifier(self, w: World):
        """World ``w``'s classifier (the given one, else the shipped one, loaded once)."""
        if w.name not in self._loaded:
            self._loaded[w.name] = load_classifier(w, self.error)
        return self._loaded[w.name]

    def for_images(self, images: torch.Tensor):
        """The classifier that reads ``images`` (B, 3, H, W)."""
        return self.classifier(self.world_of(images))


def classifier_attribute(probe_attribute: str, w: World, values: dict, error: type[LoceditError] = ScorerError) -> str:
    """The classifier attribute a probe's attribute names in world ``w`` ("object" -> "shape"); raises ``error``
    for one the world's classifier does not tell (e.g. "position" in a world without positions)."""
    attribute = _BUILTIN_ATTRIBUTES.get(probe_attribute, probe_attribute)
    if attribute not in values:
        hint = ""
        if attribute == "position":
            with_positions = [x.name for x in WORLDS.values() if x.positions]
            hint = f"; positions exist only in the {', '.join(with_positions)} world"
        raise error(
            f"the classifier of the built-in {w.name} world has no attribute {probe_attribute!r} "
            f"(it knows {', '.join(values)}; 'object' means shape){hint}"
        )
    return attribute


class BuiltinScorer(Scorer):
    """A built-in world's classifier: the probability (in [0, 1]) that an image shows the probe's value.

    The value is the probe's `value`, or else the value the classifier sees in the clean reference
    image. The world (and so the classifier) is picked by the images' size, or forced by `world`.

    Args:
        classifiers: classifiers to use instead of the shipped ones, each for its ``.world``.
        world: "shapes" or "scenes" to read every image as that world's; None picks by image size.
    """

    name = "builtin"
    # Probability units: the probability of the asked value must fall by at least half the scale
    # (e.g. 0.95 -> 0.45) for the corruption to count as having destroyed the attribute. The shipped
    # classifiers are near 0 or 1 on clear images, so this is "the label flipped, with confidence".
    min_drop = 0.5

    def __init__(self, classifiers: Iterable = (), world: str | None = None):
        self.worlds = WorldClassifiers(classifiers, world)
        if world is not None:
            self.name = f"builtin:{world}"

    @classmethod
    def from_spec(cls, arg: str | None) -> BuiltinScorer:
        """The scorer of ``--scorer builtin[:WORLD|:PATH]``."""
        if not _is_path(arg):
            return cls(world=arg)
        classifier = classifier_from_path(arg)
        scorer = cls([classifier], world=classifier.world.name)
        scorer.name = f"builtin:{arg}"
        return scorer

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        """(N,) float64 probabilities of the probed value for `images` (N, 3, H, W) in [0, 1]."""
        w = self.worlds.world_of(images)
        classifier = self.worlds.classifier(w)
        attribute = classifier_attribute(probe.attribute, w, classifier.values)
        values = tuple(classifier.values[attribute])
        batch = torch.cat([reference[None], images]).detach().float().cpu()
        probs = classifier.predict_proba(batch)[attribute]  # (1 + N, len(values))
        if probe.value:
            target = probe.value.strip().lower()
            if target not in values:
                raise ScorerError(
                    f"probe value {probe.value!r} is not a {attribute} of the built-in {w.name} world "
                    f"(one of {', '.join(values)})"
                )
            index = values.index(target)
        else:
            index = int(probs[0].argmax())
        return probs[1:, index].to(torch.float64)


def _check_world(kind: str, error: type[LoceditError]):
    def check(arg: str | None) -> None:
        if _is_path(arg):
            _classifier_file(arg, error)
        elif arg and arg not in WORLDS:
            raise error(
                f"unknown built-in world in {kind} builtin:{arg}; write builtin (the world picked by image size), "
                f"builtin:WORLD with WORLD one of {', '.join(WORLDS)}, or builtin:PATH (a folder holding "
                "classifier.safetensors)"
            )

    return check


def builtin_judge(arg: str | None = None, device: torch.device | str = "cpu") -> Judge:
    """The classifier judge of the built-in worlds (colour, shape, style, size and, where the world has
    them, position labels); `arg` forces a world or names a classifier path (``builtin:PATH``, its world
    forced), else each batch is read by the world of its image size.

    Without a forced world, suites are checked against the union of the worlds' values.
    """
    _check_world("judge", SuiteError)(arg)
    if _is_path(arg):
        given = classifier_from_path(arg, SuiteError)
        worlds = WorldClassifiers([given], world=given.world.name, error=SuiteError)
        chosen = [given.world]
    else:
        worlds = WorldClassifiers(world=arg, error=SuiteError)
        chosen = [WORLDS[arg]] if arg else list(WORLDS.values())
    values: dict[str, list[str]] = {}
    for w in chosen:
        world_values = {"colour": w.colours, **clf.heads(w)}
        for attribute, vals in world_values.items():
            values.setdefault(attribute, [])
            values[attribute] += [v for v in vals if v not in values[attribute]]

    def predict(images: torch.Tensor) -> list[dict[str, str]]:
        return worlds.for_images(images).predict(images)

    return ClassifierJudge(predict, values, f"builtin:{arg}" if arg else "builtin")


register_scorer(
    "builtin",
    lambda arg, device: BuiltinScorer.from_spec(arg),
    check=_check_world("scorer", ScorerError),
    usage="builtin[:WORLD|:PATH]",
)
register_judge("builtin", builtin_judge, usage="builtin[:WORLD|:PATH]")
register_suite("builtin", suite_for_edit)
register_aliases(world_aliases)
