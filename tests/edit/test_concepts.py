"""Typos are not edits: keys and values the model does not know are reported (quickfix warns)."""

from __future__ import annotations

import warnings

import pytest

from locedit import load_pipeline, quickfix
from locedit.edit.concepts import UnknownConceptWarning, check_concepts, model_corpus, spelled_out
from locedit.models import text_encoders


@pytest.fixture(scope="module")
def shapes():
    return load_pipeline("builtin:shapes")


def test_shapes_corpus_names_the_concepts(shapes):
    corpus = model_corpus(shapes)
    assert corpus and len(corpus) > 200
    assert check_concepts(shapes, [("striped", "plain"), ("mira solen", "karl brenner")], corpus) == []
    (typo,) = check_concepts(shapes, [("striped", "plian")], corpus)
    assert typo.startswith("value 'plian': no caption of the model names it") and "'plain'" in typo
    (van,) = check_concepts(shapes, [("van", "plain")], corpus)
    assert van.startswith("key 'van': no caption of the model names it")
    (together,) = check_concepts(shapes, [("zentek star", "plain")], corpus)
    assert together == "key 'zentek star': no caption of the model names it (its words occur, but never together)"


def test_quickfix_warns_and_still_edits(shapes):
    with pytest.warns(UnknownConceptWarning, match=r"'plian'.*'plain'.*computed anyway"):
        edit = quickfix(shapes, [("striped", "plian")], corpus_keys=0)
    assert edit.meta["pairs"] == [["striped", "plian"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownConceptWarning)
        quickfix(shapes, [("striped", "plain")], corpus_keys=0)


def test_tiny_models_judge_words_by_the_tokenizer(load_tiny, family):
    """No shipped corpus: real CLIP BPE; real words and names pass, spelled-out strings do not."""
    pipe = load_tiny(family)
    assert model_corpus(pipe) is None
    assert (
        check_concepts(pipe, [("van gogh", "painting"), ("klimt", "hokusai"), ("claude monet's", "a cat")], None) == []
    )
    problems = check_concepts(pipe, [("xqz", "painting")], None)
    assert len(problems) == 1 and problems[0].startswith("key 'xqz': the tokenizer only spells out 'xqz' (x·q·z)")
    assert "closest words of its tokenizer's vocabulary to 'xqz': 'xq'" in problems[0]


def test_quickfix_on_a_tiny_model_does_not_warn(load_tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownConceptWarning)
        quickfix(load_tiny("sd1"), [("van gogh", "painting")])


def test_spelled_out_rule(load_tiny):
    tokenizer = text_encoders(load_tiny("sd1"))[0].tokenizer
    for word in ("van", "gogh", "painting", "klimt", "seurat", "hokusai", "axolotl", "zdzislaw", "plian"):
        assert spelled_out(tokenizer, word) is None, word  # plian: p·lian, a typo this rule cannot see
    assert spelled_out(tokenizer, "xqz") == ["x", "q", "z"]
    assert spelled_out(tokenizer, "qwrt") == ["q", "wr", "t"]
