"""The classifier scorer: accurate on freshly drawn world images, accepts PIL and tensors."""

from __future__ import annotations

import torch
from PIL import Image

from locedit.builtin import world
from locedit.builtin.classifier import ShapesClassifier


def test_classifier_accuracy_on_fresh_world_images():
    clf = ShapesClassifier.load()
    acc = clf.accuracy_on_world(n=400, seed=987654)
    assert min(acc.values()) >= 0.98, acc


def test_classifier_inputs_and_probabilities():
    clf = ShapesClassifier.load()
    rec = world.Record("star", "blue", "dotted", "large", seed=5)
    img = world.render(rec)
    as_pil = clf.predict([Image.fromarray(img)])[0]
    as_tensor = clf.predict(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0]
    assert as_pil == as_tensor == rec.attributes
    probs = clf.predict_proba(Image.fromarray(img))
    assert set(probs) == {"colour", "shape", "style", "size"}
    for p in probs.values():
        assert torch.allclose(p.sum(1), torch.ones(1), atol=1e-5)
