"""`locedit trace` on bad input: one clear line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest

from locedit.cli import main


def _trace(model, probes, out, *extra):
    return ["trace", str(model), "--probes", str(probes), "--steps", "2", "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--layers", "nope.*"), "matches no traceable UNet layer"),
        (("--component", "text-encoder", "--layers", "attn2"), "not a text-encoder state"),
        (("--scorer", "clip:/no/such/clip"), "CLIP scorer folder"),
        (("--scorer", "magic"), "unknown scorer"),
        (("--seeds", "0,x"), "--seeds"),
        (("--seeds", "1,1"), "repeats"),
        (("--noise", "loud"), "--noise"),
        (("--batch", "0"), "--batch"),
    ],
)
def test_bad_options(tiny_dirs, probe_file, tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert main(_trace(tiny_dirs["sd1"], probe_file, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_subject_not_in_prompt(tiny_dirs, tmp_path, capsys):
    probes = tmp_path / "bad.jsonl"
    probes.write_text(json.dumps({"prompt": "a photo of a dog", "subject": "cat", "attribute": "object"}) + "\n")
    out = tmp_path / "run"
    assert main(_trace(tiny_dirs["sd1"], probes, out)) == 2
    err = capsys.readouterr().err.strip()
    assert "probe 1" in err and "'cat'" in err and "does not occur" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_probe_file_and_model(tiny_dirs, probe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_trace(tiny_dirs["sd1"], tmp_path / "none.jsonl", out)) == 2
    assert "probe file" in capsys.readouterr().err
    assert main(_trace(tmp_path / "no_model", probe_file, out)) == 2
    capsys.readouterr()
    assert not out.exists()
