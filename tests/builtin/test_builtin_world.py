"""The shapes world: determinism, vocabularies, caption lengths and train/held-out splits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from locedit.builtin import world
from locedit.builtin.tokenizer import MODEL_MAX_LENGTH, write_tokenizer


def _max_caption_words() -> int:
    """The longest caption of the world, in words (its longest words in every template)."""
    longest = 0
    for template in world.all_templates():
        if "{entity}" in template:
            words = max(len(world.caption(replace(r, entity=n), template).split()) for n, r in world.ENTITIES.items())
        else:
            words = len(world.caption(world.Record("triangle", "purple", "checkered", "small"), template).split())
        longest = max(longest, words)
    return longest


def test_sampling_and_rendering_are_deterministic():
    a = [world.sample(np.random.default_rng(7)) for _ in range(1)] + [world.sample(np.random.default_rng(7))]
    assert a[0] == a[1]
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    recs1 = [world.sample_training_pair(rng1) for _ in range(20)]
    recs2 = [world.sample_training_pair(rng2) for _ in range(20)]
    assert recs1 == recs2
    img1 = world.render(recs1[0][0])
    img2 = world.render(recs1[0][0])
    assert img1.dtype == np.uint8 and img1.shape == (32, 32, 3)
    np.testing.assert_array_equal(img1, img2)
    assert world.render_batch([r for r, _ in recs1[:4]]).shape == (4, 3, 32, 32)


def test_held_out_pairs_never_in_training():
    seen = world.seen_combinations()
    assert not any(world.is_held_out(c, s) for s, c, _, _ in seen)
    held_phrases = [f"{c} {s}" for c, s in world.HELD_OUT_PAIRS]
    captions = world.SHAPES_WORLD.training_captions()
    for cap in captions:
        for phrase in held_phrases:
            assert phrase not in cap, (phrase, cap)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        rec, cap = world.sample_training_pair(rng)
        assert not world.is_held_out(rec.colour, rec.shape)
        assert cap in captions
    for held in world.held_out_combinations():
        assert world.is_held_out(held[1], held[0])


def test_held_out_templates_are_new_captions():
    captions = world.SHAPES_WORLD.training_captions()
    for template in world.HELD_OUT_TEMPLATES:
        assert template not in world.TRAIN_TEMPLATES
        for s, c, st, z in world.seen_combinations()[:40]:
            assert world.caption(world.Record(s, c, st, z), template) not in captions


def test_vocabularies_artists_entities():
    assert len(world.SHAPES) == 5 and len(world.COLOURS) == 5 and len(world.STYLES) == 4
    assert set(world.ARTISTS.values()) == set(world.STYLES)
    assert all(len(name.split()) == 2 for name in world.ARTISTS)
    for name, rec in world.ENTITIES.items():
        assert not world.is_held_out(rec.colour, rec.shape), name


def test_every_caption_fits_the_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(write_tokenizer(tmp_path, world.vocabulary())))
    assert tok.model_max_length == MODEL_MAX_LENGTH
    for word in world.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    assert _max_caption_words() + 2 <= MODEL_MAX_LENGTH
    ids = tok("a small purple triangle in the style of ivo marek").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 12
