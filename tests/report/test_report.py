"""`locedit report RUNDIR`: heatmaps from the store (UNet by attribute and prompt; text encoder
tokens × layers with subject tokens marked, and ROME's category summary), each cell the mean over the
destroyed (prompt, seed) pairs with a 95% t-interval and n, drawn and written to heatmaps.csv."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from locedit.cli import main
from locedit.report import (
    draw_heatmap,
    draw_report,
    heatmaps,
    t_interval,
    text_prompt,
    text_summary,
    unet_by_attribute,
    unet_by_prompt,
)
from locedit.report.heatmaps import t975
from locedit.trace.store import CSV_COLUMNS


def _probes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a red cat", "subject": "cat", "attribute": "object"}) + "\n")
    return path


def test_unet_and_text_reports(tiny_dirs, tmp_path, capsys):
    probes = _probes(tmp_path)
    common = ["--probes", str(probes), "--steps", "2", "--guidance", "5", "--quiet", "--min-drop", "0"]
    assert main(["trace", str(tiny_dirs["sd1"]), *common, "--layers", "block", "--out", str(tmp_path / "u")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "u")]) == 0
    *written, summary = capsys.readouterr().out.splitlines()
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert names == {"unet_by_attribute.png", "unet_by_prompt.png", "heatmaps.csv"}
    assert summary == (
        f"report: 2 heatmap(s) and heatmaps.csv (mean, 95% interval, n per cell) in {tmp_path / 'u' / 'report'}"
    )
    assert (tmp_path / "u" / "report" / "unet_by_attribute.png").stat().st_size > 1000
    with (tmp_path / "u" / "report" / "heatmaps.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert {r["heatmap"] for r in table} == {"unet_by_attribute", "unet_by_prompt"}
    assert all(r["n"] in ("0", "1") for r in table)  # one prompt, one seed
    assert (
        main(
            [
                "trace",
                str(tiny_dirs["sd1"]),
                *common,
                "--component",
                "text-encoder",
                "--layers",
                "attn",
                "--batch",
                "32",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert main(["report", str(tmp_path / "t"), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "text_P0000_text_encoder_attn.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "text_summary_text_encoder_attn.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "heatmaps.csv").is_file()
    # The same maps in one HTML page: a figure per map, token labels (subject starred) in the tables.
    from locedit.report import write_report_html

    page, report = write_report_html(tmp_path / "t")
    maps = heatmaps(tmp_path / "t")
    assert [f.caption.split(":")[0] for f in report.figures] == [m.name for m in maps]
    assert {"text_summary_text_encoder_attn", "text_P0000_text_encoder_attn"} <= {m.name for m in maps}
    assert "<td>cat*</td>" in page.read_text()


def test_report_into_a_closed_pipe_ends_quietly(trace_run, tmp_path):
    # `locedit report DIR | head -1`, with the reader gone before the first byte (so every write fails)
    argv = [sys.executable, "-m", "locedit", "report", str(trace_run), "--out", str(tmp_path / "report")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_report_of_missing_or_unfinished_run_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")  # a trace run killed before results.csv
    assert main(["report", str(tmp_path / "unfinished")]) == 2
    err = capsys.readouterr().err
    assert "results.csv, baselines.csv and config.json" in err and "--resume" in err


def test_t_interval():
    s = t_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    half = 2.5706 * math.sqrt(3.5) / math.sqrt(6)  # t(0.975, 5) · sd / √n, sd² = 17.5 / 5
    assert s.n == 6 and s.mean == 3.5
    assert s.lo == pytest.approx(3.5 - half) and s.hi == pytest.approx(3.5 + half)
    assert s.half_width == pytest.approx(half)
    one = t_interval([0.7, math.nan])  # NaNs dropped; one value: no interval
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.lo) and math.isnan(one.hi)
    assert t_interval([]).n == 0 and math.isnan(t_interval([]).mean)
    # quantiles: table up to 30 degrees of freedom, Cornish–Fisher beyond (reference values to 4 decimals)
    assert t975(1) == 12.7062 and t975(30) == 2.0423
    assert t975(40) == pytest.approx(2.0211, abs=1e-4) and t975(120) == pytest.approx(1.9799, abs=1e-4)


def _row(pi, seed, layer, attribute, effect, destroyed, component="unet", token="", state="attn2", encoder=""):
    return {
        "prompt_index": str(pi),
        "prompt": f"p{pi}",
        "attribute": attribute,
        "seed": str(seed),
        "layer": layer,
        "component": component,
        "effect": str(effect),
        "destroyed": destroyed,
        "token": token,
        "state": state,
        "encoder": encoder,
    }


def test_unet_cells_average_the_destroyed_pairs_with_an_interval():
    # style: prompts 0 and 1, 4 seeds each; 6 of the 8 pairs destroyed. colour: prompt 2, 3 seeds, 1 destroyed.
    destroyed = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 3), (2, 1)}
    rows = []
    for pi, attribute, seeds in ((0, "style", 4), (1, "style", 4), (2, "colour", 3)):
        for seed in range(seeds):
            flag = "1" if (pi, seed) in destroyed else "0"
            for layer in ("a", "b"):
                effect = (10.0 if flag == "0" else 0.1 * (pi * 4 + seed)) + (layer == "b")
                rows.append(_row(pi, seed, layer, attribute, effect, flag))
    h = unet_by_attribute(rows, noise=3.0)
    assert h.row_labels == ["a", "b"] and h.col_labels == ["style", "colour"]
    style = [0.0, 0.1, 0.2, 0.4, 0.5, 0.7]  # the destroyed pairs' effects at layer a (the others would be 10)
    expected = t_interval(style)
    cell = h.cells[0][0]
    assert cell.n == 6 and cell.mean == pytest.approx(expected.mean) and cell.lo == pytest.approx(expected.lo)
    assert h.cells[1][0].mean == pytest.approx(expected.mean + 1)
    colour = h.cells[0][1]
    assert colour.n == 1 and colour.mean == pytest.approx(0.9) and math.isnan(colour.lo)
    assert h.interpretable and h.destroyed == 7 and h.pairs == 11
    assert h.title == "UNet · causal effect by attribute · noise 3 · 7 of 11 (prompt, seed) pairs destroyed"

    by_prompt = unet_by_prompt(rows)
    assert by_prompt.col_labels == ["0: p0 (3/4)", "1: p1 (3/4)", "2: p2 (1/3)"]
    assert [c.n for c in by_prompt.cells[0]] == [3, 3, 1]
    assert by_prompt.cells[0][0].mean == pytest.approx(0.1)
    assert "not destroyed" not in by_prompt.title and "7 of 11 (prompt, seed) pairs destroyed" in by_prompt.title
    # a prompt none of whose seeds was destroyed: a blank column, not an average of undestroyed pairs
    blank = unet_by_prompt(rows + [_row(3, 0, "a", "style", 5.0, "0"), _row(3, 0, "b", "style", 5.0, "0")])
    assert blank.col_labels[-1] == "3: p3 (0/1)" and blank.cells[0][-1].n == 0 and math.isnan(blank.cells[0][-1].mean)


def test_a_map_with_no_destroyed_pair_says_so(tmp_path):
    rows = [_row(0, s, "a", "style", 0.5 + 0.1 * s, "0") for s in range(4)]
    h = unet_by_attribute(rows)
    assert not h.interpretable and h.cells[0][0].n == 4  # averaged over every pair, but flagged
    assert h.title == "UNet · causal effect by attribute · none of 4 (prompt, seed) pairs destroyed: not interpretable"
    assert draw_heatmap(h, tmp_path / "grey.png").stat().st_size > 1000


def _text_run(tmp_path, rows, padding=False):
    """A text-encoder run folder: config.json and results.csv with `rows`."""
    run = tmp_path / "run"
    run.mkdir()
    tokens = ["<start>", "a</w>", "red</w>", "cat</w>", "a</w>", "<end>"]
    config = {
        "component": "text-encoder",
        "noise": 3.0,
        "padding": padding,
        "traced": {"encoders": ["text_encoder"], "states": ["attn"]},
        "probes": [{"prompt": "a red cat a", "subject": "red", "attribute": "colour"}] * 2,
        "tokens": [[tokens], [tokens]],
        "subject_spans": [[[2, 3]], [[2, 3]]],
    }
    (run / "config.json").write_text(json.dumps(config))
    with (run / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return run, config


def test_text_maps_by_token_index_and_category(tmp_path):
    # two prompts × 3 seeds; prompt 1's seed 2 not destroyed. effect = token + 10·layer + seed/10
    rows = [
        _row(pi, seed, str(layer), "colour", t + 10 * layer + seed / 10, "0" if (pi, seed) == (1, 2) else "1")
        | {"component": "text-encoder", "token": str(t), "state": "attn", "encoder": "text_encoder"}
        for pi in range(2)
        for seed in range(3)
        for t in range(6)
        for layer in range(2)
    ]
    run, config = _text_run(tmp_path, rows)
    one = text_prompt(rows, config, 1, "text_encoder", "attn")
    # both "a" tokens keep their own rows (keyed by position, not label); the subject is starred
    assert one.row_labels == ["<start>", "a", "red*", "cat", "a", "<end>"] and one.col_labels == ["0", "1"]
    assert one.cells[4][1].mean == pytest.approx(4 + 10 + 0.05) and one.cells[4][1].n == 2
    assert one.destroyed == 2 and one.pairs == 3
    assert one.title == "text_encoder · attn · colour · 'a red cat a' · 2 of 3 (prompt, seed) pairs destroyed"
    summary = text_summary(rows, config, "text_encoder", "attn")
    assert summary.row_labels[:4] == ["start token", "first subject", "middle subject", "last subject"]
    assert "padding" not in summary.row_labels
    further = summary.row_labels.index("further tokens")  # tokens 4 (only; 3 is first subsequent, 5 last)
    assert summary.cells[further][0].n == 5  # 5 destroyed pairs, one value each
    assert summary.cells[further][0].mean == pytest.approx(4 + (0.0 + 0.1 + 0.2 + 0.0 + 0.1) / 5)
    assert summary.cells[summary.row_labels.index("middle subject")][0].n == 0  # a one-token subject

    written = draw_report(run, tmp_path / "figs")
    assert [p.name for p in written] == [
        "text_summary_text_encoder_attn.png",
        "text_P0000_text_encoder_attn.png",
        "text_P0001_text_encoder_attn.png",
        "heatmaps.csv",
    ]
    with written[-1].open(newline="") as f:
        table = list(csv.DictReader(f))
    cell = next(r for r in table if r["heatmap"] == "text_P0001_text_encoder_attn" and r["row"] == "red*")
    stat = one.cells[2][0]
    assert cell["column"] == "0" and int(cell["n"]) == 2
    assert float(cell["mean"]) == pytest.approx(stat.mean) and float(cell["lo"]) == pytest.approx(stat.lo)
    assert float(cell["hi"]) == pytest.approx(stat.hi) and stat.lo < stat.mean < stat.hi
    assert cell["destroyed_only"] == "1" and cell["pairs_destroyed"] == "2" and cell["pairs"] == "3"
    assert len(heatmaps(run)) == 3


def test_token_categories_rome_style():
    from locedit.report import token_categories

    # BOS a photo of van gogh , x EOS: subject "van gogh" at [4, 6), 9 tokens.
    cats = token_categories(9, 4, 6)
    assert cats["first subject"] == [4] and cats["last subject"] == [5] and cats["middle subject"] == []
    assert cats["first subsequent"] == [6] and cats["further tokens"] == [7] and cats["last token"] == [8]
    assert token_categories(5, 3, 4)["first subject"] == token_categories(5, 3, 4)["last subject"] == [3]
    assert cats["padding"] == [] and token_categories(9, 4, 6, padding=True)["padding"] == [9]
