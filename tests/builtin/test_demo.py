"""`locedit demo` end to end on the built-in model (shortened settings), its output folder rules, and its
summary's top cells (mean over destroyed seeds with a 95% interval)."""

from __future__ import annotations

import json

import pytest

from locedit.builtin.demo import DemoSettings, _top_cells, run_demo, summary_markdown
from locedit.cli import main
from locedit.report import t_interval

SHORT = DemoSettings(
    steps=4,
    trace_steps=2,
    seeds=(0, 1),
    probe_count=1,
    text_states=("attn",),
    unet_layers=("attn2",),
    eval_per_group=2,
)


def test_demo_defaults_trace_six_seeds():
    assert len(DemoSettings().seeds) >= 6


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, SHORT, quiet=True)
    for name in (
        "summary.md",
        "summary.json",
        "edit.safetensors",
        "probes.jsonl",
        "eval/results.json",
        "eval/results.csv",
        "eval/grid-efficacy.png",
        "eval/grid-neighbours.png",
        "eval/grid-generality.png",
        "heatmaps/text-encoder/heatmaps.csv",
        "heatmaps/unet/heatmaps.csv",
    ):
        assert (out / name).is_file(), name
    assert list((out / "heatmaps" / "text-encoder").glob("*.png")) and list((out / "heatmaps" / "unet").glob("*.png"))
    assert (out / "trace-text-encoder" / "results.csv").is_file() and (out / "trace-unet" / "results.csv").is_file()
    stored = json.loads((out / "summary.json").read_text())
    assert stored["edit"]["pairs"] == [["striped", "plain"]]
    assert {r["group"] for r in stored["edit"]["rows"]} >= {"efficacy", "generality", "neighbours", "attributes"}
    assert all("null_rate" in r for r in stored["edit"]["rows"])
    assert summary["trace"]["unet"]["cells"] > 0
    for info in stored["trace"].values():
        ((k, m),) = info["destroyed"].values()  # one probe: [destroyed, traced] (prompt, seed) pairs
        assert m == 2 and 0 <= k <= 2
        assert all({"effect", "lo", "hi", "n"} <= set(c) and 1 <= c["n"] <= k for c in info["top_cells"])
    assert "(prompt, seed) pairs" in (out / "summary.md").read_text()
    # a second run replaces the earlier demo folder; no temporary folders are left behind
    run_demo(out, SHORT, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def _row(seed, token, effect, destroyed, layer="0"):
    return {
        "prompt_index": "0",
        "prompt": "a red circle",
        "seed": str(seed),
        "layer": layer,
        "token": str(token),
        "state": "attn",
        "effect": str(effect),
        "destroyed": destroyed,
    }


def test_top_cells_average_the_destroyed_seeds_with_an_interval():
    config = {"tokens": [[["<start>", "a</w>", "red</w>", "circle</w>", "<end>"]]], "subject_spans": [[[2, 3]]]}
    rows = [_row(s, 2, 0.8 + 0.05 * s, "1") for s in range(4)] + [_row(4, 2, -5.0, "0")]  # seed 4 not destroyed
    rows += [_row(s, 3, 0.5, "1") for s in range(4)] + [_row(0, 1, 0.7, "1", layer="1")]
    top = _top_cells(rows, "text-encoder", config, n=3)
    expected = t_interval([0.8, 0.85, 0.9, 0.95])
    assert top[0]["token"] == "2 red*" and top[0]["n"] == 4 and top[0]["effect"] == pytest.approx(0.875)
    assert top[0]["lo"] == pytest.approx(expected.lo, abs=1e-3) and top[0]["hi"] == pytest.approx(expected.hi, abs=1e-3)
    # ranked by mean; a single seed (no interval) comes after, though its mean is higher than 0.5
    assert top[1]["token"] == "3 circle" and top[1]["lo"] == top[1]["hi"] == 0.5
    assert top[2]["token"] == "1 a" and top[2]["n"] == 1 and top[2]["lo"] is None
    summary = {
        "trace": {"text-encoder": {"noise": 12.0, "cells": 9, "destroyed": {"a red circle": [4, 5]}, "top_cells": top}},
        "edit": {"pairs": [["striped", "plain"]], "settings": {}, "rows": [], "weight": {"tensors": {}}},
        "timings_s": {"total": 1.0},
    }
    text = summary_markdown(summary)
    assert "destroyed the attribute in 4 of 5 (prompt, seed) pairs ('a red circle': 4 of 5)" in text
    assert f"| a red circle | 0 | 2 red* | attn | 0.88 [{expected.lo:.2f}, {expected.hi:.2f}] | 4 |" in text
    assert "| a red circle | 1 | 1 a | attn | 0.70 | 1 |" in text


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "mine", SHORT, quiet=True)
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quiet"]) == 2
    assert "not an earlier demo folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_shipped_default_probes_are_the_generators_and_fit_both_worlds():
    """builtin:shapes' locedit_probes.jsonl is model_probes_text's (so it cannot drift from shapes_probes), and
    the probes are captions of the scenes world too, whose assembled folder writes the same records."""
    from dataclasses import replace

    from locedit.builtin import builtin_path
    from locedit.builtin.demo import model_probes_text, shapes_probes
    from locedit.builtin.world import SCENES_WORLD, SHAPES_WORLD
    from locedit.errors import InvalidInputError
    from locedit.probes import MODEL_PROBES_FILE, Probe, load_probes

    shipped = builtin_path("shapes") / MODEL_PROBES_FILE
    assert shipped.read_text() == model_probes_text(SHAPES_WORLD)
    assert load_probes(shipped) == [Probe(**p) for p in shapes_probes()]
    scenes = model_probes_text(SCENES_WORLD)
    assert scenes.splitlines()[1:] == model_probes_text(SHAPES_WORLD).splitlines()[1:]
    no_purple = replace(SHAPES_WORLD, colours=SHAPES_WORLD.colours[:-1])  # a world the last probe does not fit
    with pytest.raises(InvalidInputError, match="purple"):
        model_probes_text(no_purple)
