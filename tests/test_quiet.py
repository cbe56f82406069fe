"""--quiet means the same on every command: no progress bars or messages (stderr stays empty), and
stdout holds only the final summary. Without --quiet the bars and messages are there (so these
checks can fail)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from locedit.cli import main
from locedit.evaluate.suite import EvalItem, write_suite


def run(capsys, *argv: str) -> tuple[str, str]:
    """(stdout, stderr) of `locedit ARGV`, which must succeed."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out, err


@pytest.fixture(scope="module")
def tiny_edit(tiny_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("quiet_edit") / "e.safetensors"
    assert (
        main(["edit", str(tiny_dirs["sd1"]), "--remove", "van gogh", "--to", "painting", "--out", str(path), "--quiet"])
        == 0
    )
    return path


def test_info_and_apply(tiny_dirs, tiny_edit, tmp_path, capsys):
    model = str(tiny_dirs["sd1"])
    out, err = run(capsys, "info", model, "--quiet")
    assert err == "" and out.startswith("model:") and "fingerprint:" in out
    out, err = run(capsys, "apply", model, str(tiny_edit), "--save-pipeline", str(tmp_path / "p"), "--quiet")
    assert err == "" and out.splitlines()[-1] == f"saved edited pipeline to {tmp_path / 'p'}"


def test_edit_quickfix(tiny_dirs, tmp_path, capsys):
    args = ["edit", str(tiny_dirs["sd1"]), "--remove", "van gogh", "--to", "painting"]
    out, err = run(capsys, *args, "--quiet")
    assert err == "" and "'van gogh' -> 'painting'" in out
    assert "note:" not in out and "edit took" not in out  # messages, not the summary
    loud, _ = run(capsys, *args)
    assert "note: no --out" in loud and "edit took" in loud
    out, err = run(capsys, *args, "--out", str(tmp_path / "e.safetensors"), "--quiet")
    assert err == "" and out.splitlines()[-1] == f"wrote edit {tmp_path / 'e.safetensors'}"


def test_edit_baseline_has_no_bars_when_quiet(tiny_dirs, capsys):
    args = ["edit", str(tiny_dirs["sd1"]), "--method", "esd-x", "--remove", "van gogh", "--steps", "1", "--lr", "1e-2"]
    out, err = run(capsys, *args, "--quiet")
    assert err == "" and out.startswith("esd-x") and "edit took" not in out
    _, loud_err = run(capsys, *args)
    assert "esd-x:" in loud_err  # the training bar


def test_trace_and_report(tiny_dirs, tmp_path, capsys):
    probes = tmp_path / "p.jsonl"
    probes.write_text(json.dumps({"prompt": "a red cat", "subject": "cat", "attribute": "object"}) + "\n")
    args = ["trace", str(tiny_dirs["sd1"]), "--probes", str(probes), "--steps", "1", "--layers", "block"]
    out, err = run(capsys, *args, "--out", str(tmp_path / "q"), "--quiet")
    assert err == ""
    results, corruption = out.splitlines()
    assert results == f"results: {tmp_path / 'q' / 'results.csv'}" and corruption.startswith("corruption (noise 3.0)")
    _, loud_err = run(capsys, *args, "--out", str(tmp_path / "loud"))
    assert "trace unet" in loud_err  # the cell bar
    out, err = run(capsys, "report", str(tmp_path / "q"), "--quiet")
    folder = tmp_path / "q" / "report"
    assert err == "" and out == f"report: 2 heatmap(s) and heatmaps.csv (mean, 95% interval, n per cell) in {folder}\n"


def test_eval(tiny_dirs, tiny_clip, tiny_edit, tmp_path, capsys):
    suite = tmp_path / "suite.jsonl"
    write_suite(
        [
            EvalItem("a painting by van gogh", "efficacy", 0, key_text="van gogh", value_text="a painting"),
            EvalItem("a photo of a cat", "attributes", 1),
        ],
        suite,
    )
    args = [
        "eval",
        str(tiny_dirs["sd1"]),
        str(tiny_edit),
        "--suite",
        str(suite),
        "--judge",
        f"clip:{tiny_clip}",
        "--steps",
        "1",
        "--no-null",
    ]
    out, err = run(capsys, *args, "--out", str(tmp_path / "q"), "--quiet")
    assert err == "" and out.splitlines()[-1].startswith(f"results written to {tmp_path / 'q'}/")
    _, loud_err = run(capsys, *args, "--out", str(tmp_path / "loud"))
    assert "eval:" in loud_err  # the image bar


def test_demo(tmp_path, capsys, monkeypatch):
    import locedit.commands.demo as demo_command

    real = demo_command.settings_from_args
    short = {"trace_steps": 1, "probe_count": 1, "text_states": ("attn",), "unet_layers": ("attn2",)}
    monkeypatch.setattr(
        demo_command, "settings_from_args", lambda cls, args: dataclasses.replace(real(cls, args), **short)
    )
    out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--steps", "1", "--eval-per-group", "1", "--quiet")
    assert err == ""
    assert out.startswith("# locedit demo on builtin:shapes")
    assert not any(m in out for m in ("tracing the", "editing:", "evaluating the edit"))  # run_demo's messages
    assert out.splitlines()[-1].startswith(f"demo written to {tmp_path / 'demo'}/")
