"""The built-in world's edit suites: what each group holds, for a style word, an artist, a colour and a fact."""

from __future__ import annotations

import pytest

from locedit.builtin import world
from locedit.builtin.edit_suite import DEV_TEMPLATES, TEST_TEMPLATES, concept_kind, edit_suite
from locedit.errors import InvalidInputError


def test_groups_of_a_style_word_edit():
    items = edit_suite("striped", "plain", n=12)
    groups = {it.group for it in items}
    assert groups == {"efficacy", "generality", "neighbours", "attributes", "entities", "other_route"}
    for it in items:
        if it.group in ("efficacy", "generality"):
            assert "striped" in it.prompt and it.key == {"style": "striped"} and it.target == {"style": "plain"}
            assert "style" not in it.expect  # the other attributes must stay
        elif it.group == "other_route":  # striped asked for without the word: the artist or the norland flag
            assert "striped" not in it.prompt and ("karl brenner" in it.prompt or "norland" in it.prompt)
        else:
            assert (
                "striped" not in it.prompt and "karl brenner" not in it.prompt and it.expect.get("style") != "striped"
            )
    train = {
        world.caption(world.Record(s, c, st, z), t)
        for s, c, st, z in world.seen_combinations()
        for t in world.TRAIN_TEMPLATES
    }
    assert all(it.prompt in train for it in items if it.group == "efficacy")
    assert not any(it.prompt in train for it in items if it.group != "efficacy")


def test_groups_of_an_artist_a_colour_and_a_fact():
    artist = edit_suite("karl brenner", "mira solen", n=8)
    assert all("karl brenner" in it.prompt for it in artist if it.group in ("efficacy", "generality"))
    assert all("striped" in it.prompt or "norland" in it.prompt for it in artist if it.group == "other_route")
    colour = edit_suite("red", "blue", n=8)
    assert all(it.expect.get("colour") != "red" for it in colour if it.group == "neighbours")
    assert {it.prompt for it in colour if it.group == "other_route"} <= {
        t.format(entity="the flag of veloria")
        for t in ("the image of {entity}", "{entity} in a photo", "a picture with {entity}")
    }
    fact = edit_suite("veloria", "norland", n=8)
    assert "entities" not in {it.group for it in fact}  # the other entities are its neighbours
    eff = [it for it in fact if it.group == "efficacy"]
    assert eff and all(it.key == {"shape": "star", "colour": "red", "style": "plain"} for it in eff)
    assert all(it.target == {"shape": "cross", "colour": "blue", "style": "striped"} for it in eff)
    assert all("veloria" not in it.prompt for it in fact if it.group == "neighbours")


def test_splits_use_disjoint_phrasings_and_unknown_concepts_are_refused():
    assert not set(DEV_TEMPLATES) & set(TEST_TEMPLATES)
    assert not (set(DEV_TEMPLATES) | set(TEST_TEMPLATES)) & set(world.TRAIN_TEMPLATES)
    assert concept_kind("veloria") == ("entity", "the flag of veloria")
    with pytest.raises(ValueError, match="not a concept"):
        concept_kind("van gogh")
    with pytest.raises(ValueError, match="unknown split"):
        edit_suite("red", "blue", split="train")


def test_scenes_suites_are_held_out_and_judge_positions():
    from locedit.builtin.edit_suite import splits
    from locedit.builtin.world import SCENES_WORLD as W

    train = W.training_captions()
    dev_t, test_t = splits(W)["dev"], splits(W)["test"]
    assert not set(dev_t[0]) & set(test_t[0]) and not set(dev_t[1]) & set(test_t[1])
    prompts = {}
    for split in ("dev", "test"):
        for key, value in (("wavy", "plain"), ("tomas reiwald", "mira solen"), ("orange", "blue"), ("krovan", None)):
            items = edit_suite(key, value, n=10, split=split, w=W)
            groups = {it.group for it in items}
            assert {"efficacy", "generality", "neighbours", "attributes"} <= groups, (key, groups)
            for it in items:
                if it.group != "efficacy":
                    assert it.prompt not in train, it.prompt
                    prompts.setdefault(split, set()).add(it.prompt)
            attrs = [it for it in items if it.group == "attributes"]
            assert attrs and all("position" in it.expect for it in attrs)
    assert not prompts["dev"] & prompts["test"]
    assert concept_kind("wavy", W) == ("style", "wavy")
    with pytest.raises(InvalidInputError, match="scenes world"):
        concept_kind("van gogh", W)


def test_entity_short_names_are_their_own_word():
    assert concept_kind("zentek") == ("entity", "the zentek logo")
    assert concept_kind("orbix") == ("entity", "the orbix logo")
    with pytest.raises(InvalidInputError):
        concept_kind("logo")
