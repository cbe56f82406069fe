"""The scenes world (builtin:scenes): sizes the issue asks for, splits, positions, and the shapes world pinned."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from locedit.builtin import world
from locedit.builtin.world import SCENES_WORLD as W


def test_shapes_world_is_unchanged():
    """builtin:shapes was trained on this world: its images and samples must not move."""
    rng = np.random.default_rng(0)
    recs = [world.sample(rng) for _ in range(50)] + [world.sample(rng, held_out=True) for _ in range(20)]
    digest = hashlib.sha256(world.render_batch(recs).tobytes()).hexdigest()
    assert digest == "d9d634eb54df1a39d1f15045bf53c224e0ab8d82b01b2939076843e97935d4dd"
    assert len(world.SHAPES_WORLD.training_captions()) == 1332
    assert all(r.position is None and "position" not in r.attributes for r in recs)


def test_sizes():
    assert len(W.shapes) >= 8 and len(W.colours) >= 6 and len(W.styles) >= 8
    assert len(W.artists) >= 8 and set(W.artists.values()) == set(W.styles)
    assert all(len(name.split()) >= 2 for name in W.artists)
    assert len(W.entities) >= 8 and len(W.positions) >= 4
    assert len(W.train_templates) >= 36 and len(W.held_out_templates) >= 12
    assert W.attributes == ("shape", "colour", "style", "size", "position")
    combos = {(r.shape, r.colour, r.style, r.size, r.position) for r in W.entities.values()}
    assert len(combos) == len(W.entities)  # every entity looks different


def test_splits_are_disjoint():
    captions = W.training_captions()
    held_phrases = [(c, s) for c, s in W.held_out_pairs]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        rec, cap = W.sample_training_pair(rng)
        assert (rec.colour, rec.shape) not in held_phrases
        assert cap in captions
    assert not set(W.train_templates) & set(W.held_out_templates)
    for template in W.held_out_templates:
        for combo in W.seen_combinations()[::97]:
            assert W.caption(W.record(combo), template) not in captions
    for name, rec in W.entities.items():
        assert not W.is_held_out(rec.colour, rec.shape), name
        for template in W.held_out_entity_templates:
            assert W.caption(replace(rec, entity=name), template) not in captions
    # every phrase piece of a held-out template also occurs in training (new combinations, not new words)
    train_words = {w for t in W.train_templates for w in t.replace(",", " ").split()}
    assert {w for t in W.held_out_templates for w in t.replace(",", " ").split()} <= train_words


@pytest.mark.parametrize("position", ["left", "right", "top", "bottom", "centre"])
def test_position_is_drawn_where_the_caption_says(position):
    n = W.image_size
    for seed in range(5):
        mask = W.object_mask(world.Record("square", "red", "plain", "small", seed=seed, position=position))
        ys, xs = np.nonzero(mask > 0.5)
        cx, cy = xs.mean() - n / 2, ys.mean() - n / 2
        expected = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "centre": (0, 0)}[position]
        for got, sign in ((cx, expected[0]), (cy, expected[1])):
            assert (got > 6) if sign > 0 else (got < -6) if sign < 0 else (abs(got) < 3), (position, cx, cy)
        assert mask[0].max() < 0.5 and mask[-1].max() < 0.5 and mask[:, 0].max() < 0.5 and mask[:, -1].max() < 0.5


def test_every_shape_and_style_renders_distinctly():
    masks = [W.object_mask(world.Record(s, "red", "plain", "large", seed=1, position="centre")) for s in W.shapes]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert np.abs(masks[i] - masks[j]).mean() > 0.02, (W.shapes[i], W.shapes[j])

    def signature(t: np.ndarray) -> np.ndarray:  # edge energy along 4 directions and the dark share
        c = t.max() - t.min() + 1e-6
        edges = [np.diff(t, axis=1), np.diff(t, axis=0), t[1:, 1:] - t[:-1, :-1], t[1:, :-1] - t[:-1, 1:]]
        return np.array([np.abs(e).mean() / c for e in edges] + [(t < t.min() + c / 2).mean()])

    rng = np.random.default_rng(0)
    sigs = {s: signature(W._background(s, rng)) for s in W.styles}
    for a in W.styles:
        for b in W.styles:
            assert a == b or np.abs(sigs[a] - sigs[b]).sum() > 0.1, (a, b)
    assert np.ptp(W._background("plain", rng)) == 0


def test_captions_fit_clip_context_and_name_positions():
    rec = world.Record("heart", "orange", "wavy", "large", position="left")
    cap = W.caption(rec, W.train_templates[0])
    assert "large orange heart on the left" in cap
    assert "on the left" not in W.caption(replace(rec, position="centre"), W.train_templates[0])
    assert world.get_world("scenes") is W
    with pytest.raises(Exception, match="known: shapes, scenes"):
        world.get_world("nope")


def test_scenes_tokenizer_round_trips_captions_and_splits_unseen_words(tmp_path):
    from locedit.models.tiny import clip_tokenizer, clip_tokenizer_files

    bpe = Path(__file__).resolve().parents[1] / "data" / "bpe_simple_vocab_16e6.txt.gz"
    tok = clip_tokenizer(clip_tokenizer_files(bpe, tmp_path, merges=16000))
    assert len(tok) == 512 + 16000 + 2
    rng = np.random.default_rng(0)
    captions = [W.sample_training_pair(rng)[1] for _ in range(300)]
    captions += [W.caption(W.record(c), t) for t in W.held_out_templates for c in W.seen_combinations()[::701]]
    for cap in captions:
        ids = tok(cap).input_ids
        assert len(ids) <= 77 and tok.eos_token_id not in ids[1:-1], cap
        assert tok.decode(ids, skip_special_tokens=True).replace(" ,", ",") == cap
    for word in ("strriped", "veloriaa", "brenerr", "qzxv"):  # misspellings and nonsense: several subwords, no unknown
        ids = tok(word, add_special_tokens=False).input_ids
        assert len(ids) >= 2 and tok.unk_token_id not in ids, word
        assert tok.decode(ids) == word


def test_colour_probabilities_are_sharp_in_both_worlds():
    """Rendered objects get their own colour with high probability, also where hues are close (scenes:
    red, orange and yellow lie 25–28° apart); the shapes world's rule is unchanged (15°)."""
    import torch

    from locedit.builtin.classifier import colour_probabilities, hue_sigma

    assert hue_sigma(world.SHAPES_WORLD) == 15.0 and hue_sigma(W) < 8.0
    for w in (world.SHAPES_WORLD, W):
        recs = [
            world.Record("square", c, "plain", "large", seed=s, position="centre" if w.positions else None)
            for c in w.colours
            for s in range(3)
        ]
        p = colour_probabilities(torch.from_numpy(w.render_batch(recs)), w)
        own = p[torch.arange(len(recs)), torch.tensor([w.colours.index(r.colour) for r in recs])]
        assert own.min() > 0.9, (w.name, own)
