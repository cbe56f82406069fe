"""`locedit demo` end to end on the built-in model (shortened settings), and its output folder rules."""

from __future__ import annotations

import json

import pytest

from locedit.builtin.demo import DemoSettings, run_demo
from locedit.cli import main

SHORT = DemoSettings(
    steps=4, trace_steps=2, probe_count=1, text_states=("attn",), unet_layers=("attn2",), eval_per_group=2
)


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
    ):
        assert (out / name).is_file(), name
    assert list((out / "heatmaps").glob("*.png"))
    assert (out / "trace-text-encoder" / "results.csv").is_file() and (out / "trace-unet" / "results.csv").is_file()
    stored = json.loads((out / "summary.json").read_text())
    assert stored["edit"]["pairs"] == [["striped", "plain"]]
    assert {r["group"] for r in stored["edit"]["rows"]} >= {"efficacy", "generality", "neighbours", "attributes"}
    assert all("null_rate" in r for r in stored["edit"]["rows"])
    assert summary["trace"]["unet"]["cells"] > 0
    # a second run replaces the earlier demo folder; no temporary folders are left behind
    run_demo(out, SHORT, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "mine", SHORT, quiet=True)
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quiet"]) == 2
    assert "not an earlier demo folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
