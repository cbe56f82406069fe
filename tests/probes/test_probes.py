"""Probe sets: the shipped default set, JSONL parsing, and validation against tokenizers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from locedit.models.tiny import clip_tokenizer
from locedit.probes import ATTRIBUTES, ProbeFileError, load_probes, validate_probes


def test_default_set_covers_every_attribute_and_validates(tokenizer_files):
    probes = load_probes("default")
    counts = Counter(p.attribute for p in probes)
    assert set(counts) == set(ATTRIBUTES) and all(n >= 10 for n in counts.values())
    validate_probes(probes, [clip_tokenizer(tokenizer_files), clip_tokenizer(tokenizer_files, "!")])


def test_bad_records_name_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat", "subject": "cat", "attribute": "object"}\n# comment\n\n{"prompt": "x"}\n')
    with pytest.raises(ProbeFileError, match=r"p.jsonl:4: field\(s\) subject, attribute"):
        load_probes(path)
    path.write_text("not json\n")
    with pytest.raises(ProbeFileError, match=":1: not valid JSON"):
        load_probes(path)
    with pytest.raises(ProbeFileError, match="not found"):
        load_probes(tmp_path / "missing.jsonl")


def test_subject_must_be_in_prompt_as_tokens(tmp_path, tokenizer_files):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"prompt": "a catalog of things", "subject": "cat", "attribute": "object", "value": "cat"}) + "\n"
    )
    probes = load_probes(path)
    assert probes[0].target_text == "cat"
    with pytest.raises(ProbeFileError, match=r"probe 1 \('a catalog of things'.*does not occur"):
        validate_probes(probes, [clip_tokenizer(tokenizer_files)])


def test_color_is_read_as_colour(tmp_path):
    """One spelling of the attribute, "colour" (the built-in world's); "color" in probe and suite files maps onto it."""
    from locedit.evaluate.suite import EvalItem, read_suite, write_suite
    from locedit.probes import Probe

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a red cat", "subject": "red", "attribute": " color "}) + "\n")
    assert [p.attribute for p in load_probes(path)] == ["colour"]
    assert Probe("a red cat", "red", "color") == Probe("a red cat", "red", "colour")
    suite = tmp_path / "s.jsonl"
    suite.write_text(
        json.dumps({"prompt": "a red cat", "group": "neighbours", "seed": 0, "expect": {"color": "red"}}) + "\n"
    )
    assert read_suite(suite)[0].expect == {"colour": "red"}
    write_suite([EvalItem("a red circle", "efficacy", 1, key={"color": "red", "shape": "circle"})], suite)
    assert json.loads(suite.read_text())["key"] == {"colour": "red", "shape": "circle"}
