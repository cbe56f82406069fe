"""The built-in model's registrations: the `builtin` scorer, judge and suite work by name, without
importing locedit.builtin by hand, from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from locedit.builtin import world
from locedit.builtin.plugins import BuiltinScorer
from locedit.evaluate.judges import ClassifierJudge, make_judge
from locedit.evaluate.suite import SuiteError, SuiteSettings, make_suite
from locedit.probes import Probe
from locedit.scorers import ScorerError, check_scorer_spec, make_scorer


class FakeClassifier:
    """Red when the image is bright, blue otherwise; always a circle."""

    def predict(self, images):
        return [{"colour": "red" if float(im.mean()) > 0.5 else "blue", "shape": "circle"} for im in images]


def test_builtin_scorer_scores_the_probed_attribute():
    scorer = BuiltinScorer(FakeClassifier())
    images = torch.stack([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)])
    # value given: 1 where the label is that value
    assert scorer.score(images, Probe("a red circle", "red", "color", "red"), images[0]).tolist() == [1.0, 0.0]
    # no value: the label of the clean image (images[1], blue)
    assert scorer.score(images, Probe("a red circle", "red", "color"), images[1]).tolist() == [0.0, 1.0]
    with pytest.raises(ScorerError, match="no attribute 'style'"):
        scorer.score(images, Probe("a striped circle", "striped", "style"), images[0])


def test_builtin_specs_with_the_shipped_classifier():
    scorer = make_scorer("builtin")
    assert isinstance(scorer, BuiltinScorer) and scorer.name == "builtin"
    records = [
        world.Record(shape="circle", colour="red", style="plain"),
        world.Record(shape="circle", colour="blue", style="plain"),
    ]
    images = torch.from_numpy(world.render_batch(records))
    assert scorer.score(images, Probe("a red circle", "red", "color", "red"), images[0]).tolist() == [1.0, 0.0]
    with pytest.raises(ScorerError, match="takes no argument"):
        check_scorer_spec("builtin:x")

    judge = make_judge("builtin")
    assert isinstance(judge, ClassifierJudge) and judge.name == "builtin"
    assert [o["colour"] for o in judge.observe(images, [])] == ["red", "blue"]
    with pytest.raises(SuiteError, match="unknown judge 'nope'; use one of: clip:PATH, builtin"):
        make_judge("nope")


def test_builtin_suite_by_name():
    edit = SimpleNamespace(meta={"pairs": [["striped", "plain"]], "fit_captions": []})
    items = make_suite("builtin", edit, SuiteSettings(per_group=2, seed=0, split="dev"))
    assert {it.group for it in items} >= {"efficacy", "generality", "neighbours", "attributes"}
    assert all(it.group != "efficacy" or it.key == {"style": "striped"} for it in items)
    two = SimpleNamespace(meta={"pairs": [["striped", "plain"], ["red", "blue"]]})
    with pytest.raises(SuiteError, match=r"one \(key, value\) pair"):
        make_suite("builtin", two)
    with pytest.raises(SuiteError, match="unknown suite 'nope'"):
        make_suite("nope", edit)


def test_builtin_is_registered_by_importing_any_part_of_locedit():
    code = (
        "from locedit.scorers import SCORERS; from locedit.evaluate.judges import JUDGES; "
        "from locedit.evaluate.suite import SUITES; "
        "print('builtin' in SCORERS, 'builtin' in JUDGES, 'builtin' in SUITES)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "True", "True"]
