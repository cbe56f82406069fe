"""`locedit report DIR [--html]`: the kind of a run folder told by its files (a registry a new kind joins),
each kind's report on a small real run (trace, eval; comparison as compare_methods.py writes it), one
self-contained HTML file written atomically, and bad folders refused with what was expected."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil

import pytest
from PIL import Image

from locedit.cli import main
from locedit.errors import InvalidInputError
from locedit.report import heatmaps
from locedit.report.html import CSP, Figure, Report, Section, Table, render_html, render_text, write_html
from locedit.report.runs import RUN_KINDS, RunKind, build_report, detect_run, register_run_kind, write_report_html

IMG = re.compile(r'<img src="([^"]*)"')


def embedded_images(page: str) -> list[bytes]:
    """The bytes of every <img> of `page`, which must all be base64 PNG data URIs."""
    images = []
    for src in IMG.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        images.append(base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True))
    return images


def assert_self_contained(page: str) -> None:
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP.replace(chr(39), "&#x27;")}">' in page
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert all(src.startswith("data:") for src in re.findall(r'(?:src|href)="([^"#][^"]*)"', page))


def test_kinds_are_told_by_their_files(trace_run, eval_run, comparison_run, tmp_path):
    assert detect_run(trace_run).name == "trace"
    assert detect_run(eval_run).name == "eval"
    assert detect_run(comparison_run).name == "comparison"
    # The files make the kind: an eval folder without items.jsonl is no run; a manifest of another kind neither.
    half = tmp_path / "half"
    shutil.copytree(eval_run, half)
    (half / "items.jsonl").unlink()
    with pytest.raises(InvalidInputError) as err:
        detect_run(half)
    message = str(err.value)
    assert "is not a run folder" in message
    for expected in ("comparison.csv and comparison.json", "results.json and items.jsonl", "baselines.csv and config"):
        assert expected in message
    other = tmp_path / "other"
    shutil.copytree(comparison_run, other)
    (other / "comparison.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(InvalidInputError):
        detect_run(other)
    with pytest.raises(InvalidInputError, match="is not a folder"):
        detect_run(tmp_path / "missing")


def test_a_new_kind_is_one_registration(tmp_path):
    """A future kind (e.g. LocoGen runs) joins with a detector and a builder, tried before the others if asked."""
    folder = tmp_path / "loco"
    folder.mkdir()
    (folder / "locogen.json").write_text("{}")
    kind = RunKind(
        "locogen",
        "locogen.json",
        lambda d: (d / "locogen.json").is_file(),
        lambda d: Report("LocoGen run", "locogen", str(d), sections=[Section("Layers", notes=["from locogen.json"])]),
    )
    saved = list(RUN_KINDS)
    try:
        with pytest.raises(InvalidInputError):
            detect_run(folder)
        register_run_kind(kind, first=True)
        assert RUN_KINDS[0] is kind and detect_run(folder) is kind
        path, report = write_report_html(folder)
        assert path == folder / "report.html" and report.kind == "locogen"
        assert "from locogen.json" in path.read_text()
        register_run_kind(kind)  # again: replaces it (now last), never twice
        assert [k.name for k in RUN_KINDS].count("locogen") == 1 and RUN_KINDS[-1] is kind
    finally:
        RUN_KINDS[:] = saved
    with pytest.raises(InvalidInputError):
        detect_run(folder)


def test_trace_report_embeds_every_heatmap_with_its_intervals(trace_run, tmp_path):
    path, report = write_report_html(trace_run, tmp_path / "trace.html")
    page = path.read_text()
    assert_self_contained(page)
    maps = heatmaps(trace_run)
    assert [m.name for m in maps] == ["unet_by_attribute", "unet_by_prompt"]
    images = embedded_images(page)
    assert len(images) == len(maps) == len(report.figures)
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    # Every cell's mean [95% interval] n, as heatmaps computes it (2 seeds, both destroyed: min-drop 0).
    for h in maps:
        for label, row in zip(h.row_labels, h.cells):
            for c in row:
                assert c.n == 2
                assert f"{c.mean:.2f} [{c.lo:.2f}, {c.hi:.2f}] n=2" in page, (h.name, label)
    with (trace_run / "baselines.csv").open(newline="") as f:
        for b in csv.DictReader(f):
            assert f"<td>{b['prompt_index']}: {b['prompt']}</td>" in page
    assert "2 of 2 (prompt, seed) pairs destroyed" in page


def test_eval_report_has_rates_with_intervals_and_every_group_grid(eval_run, tmp_path):
    path, report = write_report_html(eval_run, tmp_path / "eval.html")
    page = path.read_text()
    assert_self_contained(page)
    results = json.loads((eval_run / "results.json").read_text())
    for row in results["rows"]:
        rate = f"{row['rate']:.2f} [{row['lo']:.2f}, {row['hi']:.2f}]"
        null = f"{row['null_rate']:.2f} [{row['null_lo']:.2f}, {row['null_hi']:.2f}]"
        assert re.search(
            rf"<td>{row['group']}</td><td>{row['metric']}</td>.*?{re.escape(rate)}.*?{re.escape(null)}</td></tr>", page
        ), row
    grids = sorted(eval_run.glob("grid-*.png"))
    groups = {r["group"] for r in results["rows"]}
    assert {g.stem.removeprefix("grid-") for g in grids} == groups and len(groups) == 6
    assert sorted(embedded_images(page)) == sorted(g.read_bytes() for g in grids)
    items = [json.loads(line) for line in (eval_run / "items.jsonl").read_text().splitlines()]
    assert all(f"<td>{it['prompt']}</td><td>{it['seed']}</td>" in page for it in items)
    assert "striped → plain" in report.title

    # A run that kept no grid for a group says so instead of leaving the group out.
    bare = tmp_path / "bare"
    shutil.copytree(eval_run, bare)
    (bare / "grid-entities.png").unlink()
    page = write_report_html(bare)[0].read_text()
    assert len(embedded_images(page)) == 5
    assert "this run saved no before/after images for entities (no grid-entities.png)" in page
    assert "<h2>Group: entities</h2>" in page


def test_comparison_report_has_the_method_table_and_every_plot(comparison_run):
    path, report = write_report_html(comparison_run)
    page = path.read_text()
    assert_self_contained(page)
    table = next(b for b in report.sections[0].blocks if isinstance(b, Table))
    assert table.columns == ["use", "method", "setting", "efficacy", "neighbours", "edit s", "speed-up", "drift"]
    assert table.rows == [
        ["style", "quickfix", "default", "1.00 [0.89, 1.00]", "0.97 [0.83, 0.99]", "0.07", "1.0×", "0.010"],
        ["style", "esd-x", "default", "0.90 [0.74, 0.97]", "0.80 [0.63, 0.90]", "812.5", "11,607×", "0.120"],
        ["style", "esd-x", "matched", "1.00 [0.89, 1.00]", "–", "1,650.0", "23,571×", "0.200"],
        ["colour", "uce", "default", "0.93 [0.79, 0.98]", "–", "0.2", "2.9×", "–"],
    ]
    pngs = sorted(p.read_bytes() for p in comparison_run.rglob("*.png"))
    assert len(pngs) == 2 and sorted(embedded_images(page)) == pngs
    assert "plots/tradeoff.png" in page and "model: builtin:shapes" in page

    # newer comparisons say which fine-tuning run a row is (learning rate, steps, matched target reached)
    csv_text = (comparison_run / "comparison.csv").read_text().splitlines()
    extra = {"style,esd-x,default": ",1.0,1000,", "style,esd-x,matched": ",100.0,200,True"}  # others: empty
    lines = [csv_text[0] + ",lr_scale,train_steps,reached"]
    for line in csv_text[1:]:
        lines.append(line + next((v for k, v in extra.items() if line.startswith(k)), ",,,"))
    lines.append("object,ablate,matched,efficacy,0.4,0.2,0.6,20,90,1800,0.3,10.0,100,False")
    (comparison_run / "comparison.csv").write_text("\n".join(lines) + "\n")
    labels = [row[:3] for row in next(b for b in build_report(comparison_run).sections[0].blocks).rows]
    assert labels == [
        ["style", "quickfix", "default"],
        ["style", "esd-x", "default: lr ×1, 1000 steps"],
        ["style", "esd-x", "matched: lr ×100, 200 steps"],
        ["colour", "uce", "default"],
        ["object", "ablate", "matched: lr ×10, 100 steps, target not reached"],
    ]

    (comparison_run / "comparison.csv").write_text("use,method,group,rate\nstyle,esd-x,efficacy,1\n")
    with pytest.raises(InvalidInputError, match="lacks the column"):
        build_report(comparison_run)


def test_html_is_escaped_and_written_atomically(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(png, format="PNG")
    report = Report(
        "<b>title</b> & co",
        "test",
        "/x",
        ["a < b"],
        [Section("s", ["note"], [Table(["c<1>"], [["x & y"]]), Figure(png.getvalue(), 'a "cat"')])],
    )
    page = render_html(report)
    assert "&lt;b&gt;title&lt;/b&gt; &amp; co" in page and "<th>c&lt;1&gt;</th>" in page and "x &amp; y" in page
    assert 'alt="a &quot;cat&quot;"' in page and embedded_images(page) == [png.getvalue()]
    with pytest.raises(ValueError, match="not a PNG or JPEG"):
        render_html(Report("t", "test", "/x", sections=[Section("s", blocks=[Figure(b"GIF89a", "gif")])]))
    target = tmp_path / "r.html"
    target.write_text("old")
    bad = Report("t", "test", "/x", sections=[Section("s", blocks=[Figure(b"nope", "x")])])
    with pytest.raises(ValueError):
        write_html(bad, target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    write_html(report, target)
    assert target.read_text() == page
    text = render_text(report)
    assert "x & y" in text and "(1 figure(s)" in text


def test_cli_html_text_and_bad_folders(trace_run, eval_run, comparison_run, tmp_path, capsys):
    out = tmp_path / "pages" / "eval.html"
    assert main(["report", str(eval_run), "--html", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"report: {out} (eval run, 8 section(s), 6 image(s) embedded,") and "KiB" in line
    assert out.is_file() and not list(out.parent.glob(".*"))  # no temporary left beside it
    assert main(["report", str(comparison_run), "--html", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file() and "(comparison run," in capsys.readouterr().out
    # Without --html: an eval run prints its tables, a trace run gets its PNG folder (as before --html).
    assert main(["report", str(eval_run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rate [95% CI]" in printed and "null control [95% CI]" in printed
    assert printed.splitlines()[-1] == "(6 figure(s): see the HTML report, `locedit report DIR --html`)"
    folder = tmp_path / "figs"
    assert main(["report", str(trace_run), "--out", str(folder), "--quiet"]) == 0
    assert {p.name for p in folder.iterdir()} == {"unet_by_attribute.png", "unet_by_prompt.png", "heatmaps.csv"}
    capsys.readouterr()
    for bad, says in ((tmp_path / "nothing", "is not a folder"), (tmp_path / "figs", "is not a run folder")):
        assert main(["report", str(bad), "--html"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("locedit report: error:") and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists() and not (folder / "report.html").exists()
