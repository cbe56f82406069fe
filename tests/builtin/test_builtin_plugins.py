"""The built-in models' registrations: the `builtin` scorer (graded: the probability of the asked value),
judge and suite work by name for both worlds, without importing locedit.builtin by hand."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from locedit.builtin import plugins, world
from locedit.builtin.classifier import ShapesClassifier, ShapesCNN
from locedit.builtin.plugins import BuiltinScorer, classifier_path
from locedit.evaluate.judges import ClassifierJudge, make_judge
from locedit.evaluate.suite import EvalItem, SuiteError, SuiteSettings, make_suite
from locedit.models.loading import BUILTIN_MODELS
from locedit.probes import Probe
from locedit.scorers import ScorerError, check_scorer_spec, make_scorer


def _images(w: world.World, records: list[world.Record]) -> torch.Tensor:
    return torch.from_numpy(w.render_batch(records))


def test_builtin_scorer_gives_the_probability_of_the_asked_value():
    scorer = make_scorer("builtin")
    assert isinstance(scorer, BuiltinScorer) and scorer.name == "builtin" and scorer.min_drop == 0.5
    records = [
        world.Record(shape="circle", colour="red", style="plain", seed=1),
        world.Record(shape="square", colour="blue", style="striped", seed=2),
        world.Record(shape="triangle", colour="green", style="dotted", seed=3),
    ]
    images = _images(world.SHAPES_WORLD, records)
    red = scorer.score(images, Probe("a red circle", "red", "color", "red"), images[0])
    assert red.dtype == torch.float64 and red.shape == (3,)
    assert ((red >= 0) & (red <= 1)).all()
    assert red[0] > 0.9 and red[1:].max() < 0.1
    # graded, not a 0/1 label
    assert 0.0 < float(red[1:].max()) and float(red[0]) < 1.0
    circle = scorer.score(images, Probe("a red circle", "circle", "object", "circle"), images[0])
    assert circle[0] > 0.9 and circle[1:].max() < 0.1
    # no value: the value the classifier sees in the clean reference (images[1] is striped)
    style = scorer.score(images, Probe("a blue square on a striped background", "striped", "style"), images[1])
    assert style[1] > 0.9 and style[0] < 0.1 and style[2] < 0.1
    with pytest.raises(ScorerError, match="no attribute 'position'.*positions exist only in the scenes world"):
        scorer.score(images, Probe("a red circle on the left", "on the left", "position", "left"), images[0])
    with pytest.raises(ScorerError, match="no attribute 'action'"):
        scorer.score(images, Probe("a red circle", "circle", "action"), images[0])
    with pytest.raises(ScorerError, match="'orange' is not a colour of the built-in shapes world"):
        scorer.score(images, Probe("an orange circle", "orange", "colour", "orange"), images[0])


def test_builtin_scorer_picks_the_world_by_image_size():
    torch.manual_seed(0)
    scenes = ShapesClassifier(ShapesCNN(world.SCENES_WORLD), world.SCENES_WORLD)  # untrained weights
    scorer = BuiltinScorer([scenes])
    records = [
        world.Record("heart", "orange", "wavy", "large", position="left", seed=1),
        world.Record("ring", "blue", "grid", "small", position="top", seed=2),
    ]
    big = _images(world.SCENES_WORLD, records)
    assert big.shape[-1] == 48
    # 48x48 images are read by the scenes classifier: its colours (orange) and positions exist
    orange = scorer.score(big, Probe("an orange heart", "orange", "colour", "orange"), big[0])
    expected = scenes.predict_proba(big)["colour"][:, world.SCENES_WORLD.colours.index("orange")]
    assert torch.allclose(orange, expected.double()) and orange[0] > 0.5 > 0.1 > orange[1]
    position = scorer.score(big, Probe("a heart on the left", "on the left", "position", "left"), big[0])
    expected = scenes.predict_proba(big)["position"][:, world.SCENES_WORLD.positions.index("left")]
    assert torch.allclose(position, expected.double())
    assert scorer.worlds.world_of(big) is world.SCENES_WORLD
    # 32x32 images still go to the shipped shapes classifier
    small = _images(world.SHAPES_WORLD, [world.Record("circle", "red", "plain")])
    assert scorer.worlds.world_of(small) is world.SHAPES_WORLD
    assert scorer.score(small, Probe("a red circle", "circle", "object", "circle"), small[0])[0] > 0.9
    # a size no world draws: a clear error; builtin:shapes forces the shapes world (resized)
    odd = torch.rand(2, 3, 40, 40)
    with pytest.raises(ScorerError, match="no built-in world draws 40×40 images.*builtin:WORLD"):
        scorer.score(odd, Probe("a red circle", "red", "colour", "red"), odd[0])
    forced = make_scorer("builtin:shapes")
    assert forced.name == "builtin:shapes" and forced.worlds.world_of(big) is world.SHAPES_WORLD
    assert forced.score(big, Probe("a blue ring", "ring", "object", "circle"), big[0]).shape == (2,)
    with pytest.raises(ScorerError, match="unknown built-in world in scorer builtin:x"):
        check_scorer_spec("builtin:x")


def test_a_missing_scenes_classifier_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(BUILTIN_MODELS, "scenes", tmp_path / "scenes")
    assert classifier_path(world.SCENES_WORLD) == tmp_path / "scenes" / "classifier.safetensors"
    scorer = BuiltinScorer()
    big = torch.rand(1, 3, 48, 48)
    with pytest.raises(ScorerError, match=r"classifier of the built-in scenes world is not installed.*--model scenes"):
        scorer.score(big, Probe("a red circle", "red", "colour", "red"), big[0])
    judge = make_judge("builtin")
    with pytest.raises(SuiteError, match="scenes world is not installed"):
        judge.observe(big, [])


def test_builtin_spec_with_a_path_reads_that_folders_classifier(tmp_path):
    """builtin:DIR (a folder the recipe exported, not installed in the package) scores and judges with the
    classifier inside it; its world is the one whose classifier the file fits."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = ShapesCNN(world.SCENES_WORLD)
    folder = tmp_path / "pipeline"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "classifier.safetensors"))
    given = ShapesClassifier(net, world.SCENES_WORLD)
    big = _images(world.SCENES_WORLD, [world.Record("heart", "orange", "wavy", position="left", seed=3)] * 2)
    scorer = make_scorer(f"builtin:{folder}")
    assert scorer.name == f"builtin:{folder}" and scorer.worlds.world_of(big) is world.SCENES_WORLD
    probe = Probe("a heart on the left", "left", "position", "left")
    expected = given.predict_proba(torch.cat([big[:1], big]))["position"][
        1:, world.SCENES_WORLD.positions.index("left")
    ]
    assert torch.equal(scorer.score(big, probe, big[0]), expected.double())
    judge = make_judge(f"builtin:{folder / 'classifier.safetensors'}")
    assert judge.observe(big, []) == given.predict(big) and "position" in judge.values
    # a shapes-world classifier file is read as the shapes world
    save_file(dict(ShapesCNN(world.SHAPES_WORLD).state_dict()), str(tmp_path / "shapes.safetensors"))
    assert make_scorer(f"builtin:{tmp_path / 'shapes.safetensors'}").worlds.world_of(big) is world.SHAPES_WORLD
    # a folder without a classifier, and a file of other tensors, are named with the fix
    with pytest.raises(ScorerError, match=r"no built-in classifier at .*nothing'.*--export DIR"):
        check_scorer_spec(f"builtin:{tmp_path / 'nothing'}/")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SuiteError, match="is not the classifier of a built-in world"):
        make_judge(f"builtin:{tmp_path / 'other.safetensors'}")


def test_builtin_judge_for_both_worlds():
    judge = make_judge("builtin")
    assert isinstance(judge, ClassifierJudge) and judge.name == "builtin"
    records = [world.Record("circle", "red", "plain"), world.Record("circle", "blue", "plain")]
    images = _images(world.SHAPES_WORLD, records)
    assert [o["colour"] for o in judge.observe(images, [])] == ["red", "blue"]
    # values from both worlds: a scenes item (orange, position) passes the check
    assert "orange" in judge.values["colour"] and judge.values["position"] == world.SCENES_WORLD.positions
    judge.check([EvalItem("an orange heart on the left", "neighbours", 0, expect={"position": "left"})])
    shapes_only = make_judge("builtin:shapes")
    assert shapes_only.name == "builtin:shapes" and "position" not in shapes_only.values
    with pytest.raises(SuiteError, match="unknown attribute 'position'"):
        shapes_only.check([EvalItem("a red circle on the left", "neighbours", 0, expect={"position": "left"})])
    with pytest.raises(SuiteError, match="unknown built-in world in judge builtin:x"):
        make_judge("builtin:x")
    with pytest.raises(SuiteError, match=r"unknown judge 'nope'; use one of: clip:PATH, builtin\[:WORLD\|:PATH\]"):
        make_judge("nope")


def test_builtin_judge_reads_scenes_images_with_the_scenes_classifier(monkeypatch):
    torch.manual_seed(0)
    scenes = ShapesClassifier(ShapesCNN(world.SCENES_WORLD), world.SCENES_WORLD)
    monkeypatch.setattr(plugins, "load_classifier", lambda w, error: scenes)
    judge = make_judge("builtin")
    big = _images(world.SCENES_WORLD, [world.Record("heart", "orange", "wavy", position="left", seed=3)])
    (labels,) = judge.observe(big, [])
    assert set(labels) == {"colour", "shape", "style", "size", "position"} and labels["colour"] == "orange"


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
