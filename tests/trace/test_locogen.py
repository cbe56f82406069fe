"""LocoGen: window feeding against its definition (every layer fed the original prompt = the clean image,
every layer fed the altered prompt = the altered prompt's image), a planted model whose attribute only
one cross-attention layer reads, the store (resume, shards, results.csv), the summary and plot, and the
CLI's bad inputs and --quiet."""

from __future__ import annotations

import json

import pytest
import torch

from locedit import load_pipeline
from locedit.cli import main
from locedit.errors import InvalidInputError
from locedit.probes import Probe
from locedit.report.locogen import draw_locogen_report, select_windows, window_stats
from locedit.scorers import PixelScorer
from locedit.trace.engine import GenerationSettings
from locedit.trace.locogen import (
    LOCOGEN_COLUMNS,
    LocoGen,
    LocoGenRequest,
    LocoGenSettings,
    execute_locogen,
    plan_locogen,
    run_locogen,
    write_locogen_results,
)
from locedit.trace.store import RunDirError, read_results

FAST = GenerationSettings(steps=3, guidance=7.5)
PROBE = Probe("a photo of a red cat", "cat", "object", altered="a photo of a blue dog")


@pytest.fixture
def loco_probes(tmp_path):
    path = tmp_path / "loco.jsonl"
    records = [
        {"prompt": "a photo of a red cat", "subject": "cat", "attribute": "object", "altered": "a photo of a dog"},
        {"prompt": "a harbour by van gogh", "subject": "van gogh", "attribute": "style", "altered": "a harbour"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_every_layer_fed_the_original_prompt_is_the_clean_image(load_tiny, family):
    engine = LocoGen(load_tiny(family), PixelScorer(), FAST, LocoGenSettings(window=1))
    same = Probe(PROBE.prompt, PROBE.subject, PROBE.attribute, altered=PROBE.prompt)
    every = engine.window_of(range(len(engine.layers)))
    images = engine.generate(same, 0, [every, engine.window_of([0])])
    assert torch.equal(images[2], images[0]) and torch.equal(images[3], images[0])  # bitwise


def test_every_layer_fed_the_altered_prompt_is_the_altered_image(load_tiny, family):
    """Bitwise: the window row and the altered row are rows of one UNet batch whose cross-attentions read
    the same embeddings, so the same kernels see the same numbers. SDXL's UNet also reads the pooled
    embedding (added conditioning), which LocoGen leaves at the original prompt's: there the window row is
    the image of the altered prompt's sequence embeddings with the original pooled one."""
    pipe = load_tiny(family)
    engine = LocoGen(pipe, PixelScorer(), FAST, LocoGenSettings(window=1))
    every = engine.window_of(range(len(engine.layers)))
    images = engine.generate(PROBE, 0, [every, engine.window_of([0])])
    assert (images[0] - images[1]).abs().max() > 1e-3  # the altered prompt changes the image
    if family != "sdxl":
        assert torch.equal(images[2], images[1])
        return
    assert not torch.equal(images[2], images[1])
    embeds, altered = engine.encode(PROBE, 3)
    embeds["prompt_embeds"][2] = altered[0]  # altered sequence, original pooled embedding
    reference = engine.tracer.generate(embeds, 0)
    assert torch.equal(images[2], reference[2])


def planted_pipe(load_tiny, layer: int):
    """A tiny SD1 pipeline whose text reaches the image through cross-attention layer `layer` only: every
    other cross-attention's to_v is zero, so its output is to_out's bias whatever the prompt."""
    pipe = load_tiny("sd1")
    engine = LocoGen(pipe, PixelScorer(), FAST)
    with torch.no_grad():
        for i, name in enumerate(engine.layers):
            if i != layer:
                pipe.unet.get_submodule(f"{name}.to_v").weight.zero_()
    return pipe


def test_planted_layer_is_picked_with_m_1_and_no_other_window_changes_the_image(load_tiny, loco_probes, tmp_path):
    layer = 3
    pipe = planted_pipe(load_tiny, layer)
    engine = LocoGen(pipe, PixelScorer(), FAST, LocoGenSettings(window=1))
    wins = [engine.window_of([i]) for i in range(len(engine.layers))]
    images = engine.generate(PROBE, 0, wins)
    assert (images[0] - images[1]).abs().max() > 1e-3
    for i in range(len(wins)):
        if i == layer:
            assert torch.equal(images[2 + i], images[1])  # the planted layer alone gives the altered image
        else:
            assert torch.equal(images[2 + i], images[0])  # no other window changes anything

    req = LocoGenRequest(
        model="planted",
        out=str(tmp_path / "run"),
        probes=str(loco_probes),
        seeds=[0, 1],
        batch=5,
        generation=FAST,
        settings=LocoGenSettings(window="auto", max_window=2),
    )
    run_locogen(req, pipe=pipe)
    rows = read_results(tmp_path / "run")
    assert len(rows) == 2 * 2 * (7 + 6)  # probes × seeds × (windows of 1 and of 2)
    for row in rows:
        inside = int(row["start"]) <= layer < int(row["start"]) + int(row["window"])
        assert float(row["effect"]) == pytest.approx(1.0 if inside else 0.0, abs=1e-12)
    for attribute, pick in select_windows(tmp_path / "run").items():
        assert (pick["window"], pick["start"], pick["indices"]) == (1, layer, [layer]), attribute
        assert pick["reached"] and pick["n"] == (4 if attribute == "all" else 2)
        assert pick["layers"] == [engine.layers[layer]]
    written = draw_locogen_report(tmp_path / "run")
    assert [p.name for p in written] == ["locogen_effect.png", "windows.csv", "selection.json"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    stats = window_stats(tmp_path / "run")["object"]
    assert stats[(1, layer)][0].mean == pytest.approx(1.0) and stats[(1, 0)][0].mean == pytest.approx(0.0)


def test_auto_takes_the_smallest_window_reaching_the_threshold(load_tiny, loco_probes, tmp_path):
    pipe = planted_pipe(load_tiny, 3)
    req = LocoGenRequest(
        model="planted",
        out=str(tmp_path / "run"),
        probes=str(loco_probes),
        generation=FAST,
        settings=LocoGenSettings(window="auto", max_window=2, threshold=1.5),  # unreachable
    )
    run_locogen(req, pipe=pipe)
    pick = select_windows(tmp_path / "run")["all"]
    assert not pick["reached"] and pick["mean"] == pytest.approx(1.0)
    assert select_windows(tmp_path / "run", threshold=0.5)["all"]["window"] == 1


def test_resumed_and_sharded_runs_write_the_same_results(load_tiny, loco_probes, tmp_path):
    pipe = load_tiny("sd1")

    def request(out, resume=False):
        return LocoGenRequest(
            model="tiny",
            out=str(out),
            probes=str(loco_probes),
            batch=3,
            generation=FAST,
            settings=LocoGenSettings(window=2),
            resume=resume,
        )

    whole = run_locogen(request(tmp_path / "whole"), pipe=pipe).read_text()
    header = whole.splitlines()[0].split(",")
    assert tuple(header) == LOCOGEN_COLUMNS
    # kill: some records missing; resume recomputes exactly those
    run = tmp_path / "resumed"
    run_locogen(request(run), pipe=pipe)
    cells = sorted((run / "cells").glob("*.json"))
    for path in cells[1::3]:
        path.unlink()
    (run / "results.csv").unlink()
    with pytest.raises(Exception, match="--resume"):
        run_locogen(request(run), pipe=pipe)
    assert run_locogen(request(run, resume=True), pipe=pipe).read_text() == whole
    with pytest.raises(Exception, match="target was 'original'"):
        changed = request(run, resume=True)
        changed.settings = LocoGenSettings(window=2, target="altered")
        run_locogen(changed, pipe=pipe)
    # two shards (ranks 0 and 1 of 2) write the same records as one process
    shard = tmp_path / "shard"
    plan = plan_locogen(request(shard), pipe=pipe)
    from locedit.trace.store import prepare_run_dir

    prepare_run_dir(shard, plan.config, False)
    done = [execute_locogen(plan.engine, plan.probes, plan.units, shard, rank=r, world=2) for r in (0, 1)]
    assert sum(done) == len(plan.units)
    assert write_locogen_results(shard, plan.units).read_text() == whole


def test_run_folder_errors_name_a_locogen_run(load_tiny, loco_probes, tmp_path):
    pipe = load_tiny("sd1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    held = tmp_path / "held"
    held.mkdir()
    (held / "config.json").write_text("{}")
    for out, message in [(other, "is not a LocoGen run"), (held, "already holds a LocoGen run; pass --resume")]:
        request = LocoGenRequest(model="tiny", out=str(out), probes=str(loco_probes), generation=FAST)
        with pytest.raises(RunDirError, match=message):
            run_locogen(request, pipe=pipe)


def test_windows_and_indices_are_checked(load_tiny):
    engine = LocoGen(load_tiny("sd1"), PixelScorer(), FAST, LocoGenSettings(window=8))
    with pytest.raises(InvalidInputError, match="larger than the model's 7 cross-attention layers"):
        engine.windows()
    with pytest.raises(InvalidInputError, match="index 7 is out of range"):
        engine.window_of([7])
    assert [w.start for w in LocoGen(load_tiny("sd1"), PixelScorer(), FAST, LocoGenSettings(window=6)).windows()] == [
        0,
        1,
    ]


def test_builtin_model_and_scorer(tmp_path):
    """On builtin:shapes with its classifier: the colour is read by one up-block layer."""
    probes = tmp_path / "p.jsonl"
    record = {"prompt": "a red circle", "subject": "red", "attribute": "colour", "altered": "a blue circle"}
    probes.write_text(json.dumps(record) + "\n")
    req = LocoGenRequest(
        model="builtin:shapes",
        out=str(tmp_path / "run"),
        probes=str(probes),
        scorer="builtin",
        generation=GenerationSettings(steps=8),
        settings=LocoGenSettings(window=1),
    )
    run_locogen(req, pipe=load_pipeline("builtin:shapes"))
    rows = read_results(tmp_path / "run")
    assert len(rows) == 7 and all(r["changed"] == "1" for r in rows)
    pick = select_windows(tmp_path / "run")["colour"]
    assert pick["reached"] and pick["window"] == 1
    print("builtin colour pick:", pick)


def run_cli(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window", "8"], "--window 8 is larger than the model's 7 cross-attention layers"),
        (["--window", "auto", "--max-window", "9"], "--max-window 9 is larger"),
        (["--window", "two"], "--window 'two' is not a number of layers"),
    ],
)
def test_cli_bad_windows_exit_2_with_one_line(tiny_dirs, loco_probes, tmp_path, capsys, extra, message):
    argv = ["locogen", str(tiny_dirs["sd1"]), "--probes", str(loco_probes), "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, argv + extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_probe_without_altered_prompt_exits_2(tiny_dirs, probe_file, tmp_path, capsys):
    argv = ["locogen", str(tiny_dirs["sd1"]), "--probes", str(probe_file), "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, argv)
    assert code == 2 and "probe 1 (" in err and 'no "altered" prompt' in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    code, _, err = run_cli(capsys, ["locogen", str(tiny_dirs["sd1"]), "--out", str(tmp_path / "r")])
    assert code == 2 and "--probes default:" in err and "has no locedit_probes.jsonl" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["shapes", "scenes"])
def test_builtin_models_default_probes_plan_locogen(name, tmp_path):
    """Both built-in models ship probes with altered prompts, so `locedit locogen builtin:NAME` needs no --probes."""
    from locedit.builtin import builtin_path

    plan = plan_locogen(LocoGenRequest(model=f"builtin:{name}", out=str(tmp_path / "r"), scorer="builtin"))
    assert len(plan.probes) == 5 and all(p.altered for p in plan.probes)
    assert plan.config["probes_file"] == str((builtin_path(name) / "locedit_probes.jsonl").resolve())


def test_cli_quiet_and_report(tiny_dirs, loco_probes, tmp_path, capsys):
    base = ["locogen", str(tiny_dirs["sd1"]), "--probes", str(loco_probes), "--steps", "2", "--window", "3"]
    code, out, err = run_cli(capsys, base + ["--out", str(tmp_path / "q"), "--quiet"])
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"results: {tmp_path / 'q' / 'results.csv'}"
    assert any(line.startswith("all: window m=3") for line in out.splitlines())
    code, out, err = run_cli(capsys, base + ["--out", str(tmp_path / "loud")])
    assert code == 0 and "locogen" in err  # the progress bar
    assert (tmp_path / "loud" / "report" / "locogen_effect.png").is_file()
    code, out, err = run_cli(capsys, ["report", str(tmp_path / "loud"), "--out", str(tmp_path / "rep")])
    assert code == 0 and (tmp_path / "rep" / "windows.csv").is_file() and "window" in out
    code, out, err = run_cli(capsys, ["report", str(tmp_path / "loud"), "--html"])
    page = (tmp_path / "loud" / "report.html").read_text()
    assert code == 0 and "locogen run" in out
    assert "Picked windows" in page and page.count("data:image/png;base64,") == 1


def test_probe_records_read_altered(tmp_path):
    from locedit.probes import ProbeFileError, load_probes

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a red cat", "subject": "cat", "attribute": "object", "altered": "a red dog"}\n')
    probe = load_probes(path)[0]
    assert probe.altered == "a red dog" and probe.to_dict()["altered"] == "a red dog"
    assert "altered" not in Probe("a cat", "cat", "object").to_dict()  # older records and configs unchanged
    path.write_text('{"prompt": "a red cat", "subject": "cat", "attribute": "object", "altered": 3}\n')
    with pytest.raises(ProbeFileError, match='"altered" must be a non-empty string'):
        load_probes(path)
