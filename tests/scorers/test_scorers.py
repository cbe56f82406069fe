"""Scorers: pixel, clip:PATH with a tiny random local CLIP, and the registry (specs, checks, plugins)."""

from __future__ import annotations

import pytest
import torch

from locedit import scorers
from locedit.probes import Probe
from locedit.scorers import PixelScorer, Scorer, ScorerError, check_scorer_spec, make_scorer, register_scorer

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


def test_bad_specs_are_refused_before_anything_loads(tmp_path):
    with pytest.raises(ScorerError, match="CLIP scorer folder"):
        check_scorer_spec(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(ScorerError, match="CLIP scorer folder"):
        make_scorer(f"clip:{tmp_path / 'missing'}")
    with pytest.raises(ScorerError, match="clip:PATH"):
        make_scorer("clip")
    with pytest.raises(ScorerError, match="takes no argument"):
        check_scorer_spec("pixel:x")
    with pytest.raises(
        ScorerError, match=r"unknown scorer 'nope'; use one of: clip:PATH, pixel, builtin\[:WORLD\|:PATH\]"
    ):
        make_scorer("nope")


def test_a_scorer_is_returned_as_is():
    scorer = PixelScorer()
    assert make_scorer(scorer) is scorer


def test_registry_accepts_plugins():
    class Const(Scorer):
        name = "const"

        def score(self, images, probe, reference):
            return torch.full((len(images),), float(self.value), dtype=torch.float64)

        def __init__(self, value):
            self.value = value

    def check(arg):
        if arg is not None and not arg.isdigit():
            raise ScorerError(f"const:{arg}: give a number")

    register_scorer("const", lambda arg, device: Const(arg or 0), check=check, usage="const[:N]")
    try:
        assert make_scorer("const:3").score(torch.zeros(2, 3, 4, 4), PROBE, None).tolist() == [3.0, 3.0]
        assert make_scorer("const").score(torch.zeros(1, 3, 4, 4), PROBE, None).tolist() == [0.0]
        with pytest.raises(ScorerError, match="give a number"):
            check_scorer_spec("const:x")
        with pytest.raises(ScorerError, match=r"const\[:N\]"):
            check_scorer_spec("nope")
    finally:
        scorers.SCORERS.pop("const")
