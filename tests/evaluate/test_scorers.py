"""Scorers: pixel, clip:PATH with a tiny random local CLIP, the registry, and `builtin` resolving lazily."""

from __future__ import annotations

import sys

import pytest
import torch

from locedit.evaluate import scorers
from locedit.evaluate.scorers import PixelScorer, ScorerError, make_scorer, register_scorer
from locedit.probes import Probe

PROBE = Probe("a red cat", "cat", "object")


def test_pixel_scorer():
    ref = torch.rand(3, 16, 16)
    images = torch.stack([ref, 1 - ref, ref.clamp(0.2, 0.8)])
    s = make_scorer("pixel").score(images, PROBE, ref)
    assert s.dtype == torch.float64 and s[0] == 1.0 and s[1] < s[2] < 1.0
    assert PixelScorer().destroyed(1.0, 0.95) and not PixelScorer().destroyed(1.0, 0.999)


def test_clip_scorer_with_local_folder(tiny_clip):
    scorer = make_scorer(f"clip:{tiny_clip}")
    assert scorer.name == f"clip:{tiny_clip}"
    images = torch.rand(4, 3, 16, 16)
    s = scorer.score(images, PROBE, images[0])
    assert s.shape == (4,) and s.dtype == torch.float64 and torch.all(s.abs() <= 100)
    # Deterministic, and the score is 100 × the cosine of the two embeddings.
    assert torch.equal(s, scorer.score(images, PROBE, images[0]))
    other = scorer.score(images, Probe("a red dog", "dog", "object"), images[0])
    assert not torch.equal(s, other)


def test_clip_scorer_missing_folder(tmp_path):
    with pytest.raises(ScorerError, match="CLIP scorer folder"):
        make_scorer(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(ScorerError, match="clip:PATH"):
        make_scorer("clip")
    with pytest.raises(ScorerError, match="unknown scorer"):
        make_scorer("nope")


def test_registry_accepts_plugins():
    class Const(scorers.Scorer):
        name = "const"

        def score(self, images, probe, reference):
            return torch.zeros(len(images), dtype=torch.float64)

    register_scorer("const", lambda arg, device: Const())
    try:
        assert make_scorer("const").score(torch.zeros(2, 3, 4, 4), PROBE, None).tolist() == [0.0, 0.0]
    finally:
        scorers.SCORERS.pop("const")


def test_builtin_absent_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "locedit.builtin.classifier", None)  # import fails
    with pytest.raises(ScorerError, match="ShapesClassifier"):
        make_scorer("builtin")


def test_builtin_uses_classifier(monkeypatch):
    import types

    class Fake:
        @classmethod
        def load(cls):
            return cls()

        def predict(self, images):
            return [{"colour": "red" if float(im.mean()) > 0.5 else "blue", "shape": "circle"} for im in images]

    monkeypatch.setitem(sys.modules, "locedit.builtin.classifier", types.SimpleNamespace(ShapesClassifier=Fake))
    scorer = make_scorer("builtin")
    images = torch.stack([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)])
    assert scorer.score(images, Probe("a red circle", "red", "color", "red"), images[0]).tolist() == [1.0, 0.0]
    assert scorer.score(images, Probe("a red circle", "red", "color"), images[1]).tolist() == [0.0, 1.0]


def test_builtin_with_the_shipped_classifier():
    """With the built-in shapes world's classifier present, `builtin` scores its colour attribute."""
    world = pytest.importorskip("locedit.builtin.world")
    classifier = pytest.importorskip("locedit.builtin.classifier")
    if not hasattr(classifier, "ShapesClassifier"):
        pytest.skip("ShapesClassifier not available")
    try:
        scorer = make_scorer("builtin")
    except (ScorerError, OSError, FileNotFoundError) as err:
        pytest.skip(f"built-in classifier cannot be loaded: {err}")
    records = [world.Record(shape="circle", colour="red", style="plain"),
               world.Record(shape="circle", colour="blue", style="plain")]
    images = torch.from_numpy(world.render_batch(records))
    assert scorer.score(images, Probe("a red circle", "red", "color", "red"), images[0]).tolist() == [1.0, 0.0]
