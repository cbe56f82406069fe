"""`locedit eval` end to end: the built-in model with its held-out suite (disjoint from the edit's
fit), a JSONL suite with the CLIP judge on a tiny model, and bad input exiting 2 with one line."""

from __future__ import annotations

import csv
import json

import pytest

from locedit.cli import main
from locedit.evaluate.suite import EvalItem, normalize_caption, write_suite


@pytest.fixture(scope="module")
def shapes_edit(tmp_path_factory):
    path = tmp_path_factory.mktemp("edit") / "striped.safetensors"
    assert main(["edit", "builtin:shapes", "--remove", "striped", "--to", "plain", "--out", str(path), "--quiet"]) == 0
    return path


def test_builtin_suite_is_disjoint_from_the_edits_fit(shapes_edit):
    from locedit.builtin import world
    from locedit.builtin.edit_suite import _corpus, edit_suite
    from locedit.edit import Edit

    edit = Edit.load(shapes_edit)
    fit = {normalize_caption(c) for c in edit.meta["fit_captions"]}
    assert len(fit) > 100 and set(map(normalize_caption, _corpus(world.SHAPES_WORLD))) <= fit | {
        c for c in map(normalize_caption, _corpus(world.SHAPES_WORLD)) if "striped" in c
    }
    for split in ("test", "dev"):
        items = edit_suite("striped", "plain", n=30, split=split, exclude=edit.meta["fit_captions"])
        assert not {normalize_caption(it.prompt) for it in items} & fit
    dev = {it.prompt for it in edit_suite("striped", "plain", n=30, split="dev") if it.group != "efficacy"}
    test = {it.prompt for it in edit_suite("striped", "plain", n=30, split="test") if it.group != "efficacy"}
    assert not dev & test  # the split that chose the defaults shares no prompt with the one that reports


def test_eval_on_the_builtin_model(shapes_edit, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        ["eval", "builtin:shapes", str(shapes_edit), "--per-group", "3", "--steps", "4", "--out", str(out), "--quiet"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "efficacy" in printed and "null control" in printed and "||ΔW||/||W||" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["overlap"] == [] and results["config"]["fit_captions_recorded"]
    groups = {r["group"] for r in results["rows"]}
    assert groups == {"efficacy", "generality", "neighbours", "attributes", "entities", "other_route"}
    assert all("null_rate" in r for r in results["rows"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(results["rows"]) and "null_lo" in rows[0]
    assert len((out / "items.jsonl").read_text().splitlines()) == 18
    assert (out / "grid-efficacy.png").stat().st_size > 0


def test_overlapping_suite_is_refused_unless_allowed(shapes_edit, tmp_path, capsys):
    from locedit.edit import Edit

    fitted = Edit.load(shapes_edit).meta["fit_captions"][0]
    suite = tmp_path / "overlap.jsonl"
    write_suite(
        [
            EvalItem(fitted, "attributes", 0, expect={"shape": "circle"}),
            EvalItem("a red circle on a dotted background", "attributes", 1, expect={"shape": "circle"}),
        ],
        suite,
    )
    rc = main(
        ["eval", "builtin:shapes", str(shapes_edit), "--suite", str(suite), "--out", str(tmp_path / "r"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "fitted on" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    rc = main(
        [
            "eval",
            "builtin:shapes",
            str(shapes_edit),
            "--suite",
            str(suite),
            "--allow-overlap",
            "--steps",
            "2",
            "--no-null",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    assert rc == 0 and "in-sample" in capsys.readouterr().out


def test_eval_with_a_clip_judge_on_a_tiny_model(tiny_dirs, tiny_clip, tmp_path, capsys):
    edit = tmp_path / "e.safetensors"
    assert main(["edit", str(tiny_dirs["sd1"]), "--remove", "van gogh", "--to", "painting", "--out", str(edit)]) == 0
    suite = tmp_path / "suite.jsonl"
    write_suite(
        [
            EvalItem("a painting by van gogh", "efficacy", 0, key_text="van gogh", value_text="a painting"),
            EvalItem("a photo of a cat", "attributes", 1),
        ],
        suite,
    )
    rc = main(
        [
            "eval",
            str(tiny_dirs["sd1"]),
            str(edit),
            "--suite",
            str(suite),
            "--judge",
            f"clip:{tiny_clip}",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["config"]["judge"] == f"clip:{tiny_clip}"


@pytest.mark.parametrize("case", ["missing edit", "other model", "unknown attribute", "empty suite", "no judge"])
def test_bad_eval_input_exits_2_with_one_line(case, shapes_edit, tiny_dirs, tmp_path, capsys):
    suite = tmp_path / "s.jsonl"
    model, edit, extra = "builtin:shapes", str(shapes_edit), []
    if case == "missing edit":
        edit = str(tmp_path / "nope.safetensors")
    elif case == "other model":
        model = str(tiny_dirs["sd1"])
        extra = ["--suite", str(suite), "--judge", "builtin"]
        write_suite([EvalItem("a cat", "attributes", 0, expect={"shape": "circle"})], suite)
    elif case == "unknown attribute":
        write_suite([EvalItem("a cat", "attributes", 0, expect={"texture": "furry"})], suite)
        extra = ["--suite", str(suite)]
    elif case == "empty suite":
        suite.write_text("")
        extra = ["--suite", str(suite)]
    else:
        model = str(tiny_dirs["sd1"])
        write_suite([EvalItem("a cat", "attributes", 0)], suite)
        extra = ["--suite", str(suite)]
    rc = main(["eval", model, edit, *extra, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("locedit eval: error:"), err
    assert not (tmp_path / "r").exists()


def test_eval_with_attacks_writes_rows_and_resumes(shapes_edit, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["eval", "builtin:shapes", str(shapes_edit), "--per-group", "3", "--steps", "3", "--no-null"]
    common += ["--attack-prompts", "4", "--out", str(out), "--quiet"]
    assert main([*common, "--attack", "misspell"]) == 0
    printed = capsys.readouterr().out
    assert "attack success" in printed and "misspell" in printed
    misspell = (out / "parts" / "attack-misspell.json").read_text()
    assert main([*common, "--attack", "misspell"]) == 2  # a finished run is not overwritten without --resume
    assert "--resume" in capsys.readouterr().err
    (out / "parts" / "eval.json").unlink()  # as if interrupted before the evaluation part was saved
    assert main([*common, "--attack", "misspell,paraphrase", "--resume"]) == 0
    assert (out / "parts" / "attack-misspell.json").read_text() == misspell  # reused, not recomputed
    rows = {r["group"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert {"attack:none", "attack:misspell", "attack:paraphrase", "efficacy"} <= set(rows)
    assert rows["attack:misspell"]["metric"] == "shows_key" and rows["attack:misspell"]["n"] == "4"
    assert rows["attack:misspell"]["base_n"] == "4" and rows["attack:misspell"]["null_n"] == ""
    results = json.loads((out / "results.json").read_text())
    assert results["attacks"]["misspell"]["cost"]["prompts"] == 4
    assert results["config"]["attack"]["kinds"] == ["paraphrase", "misspell"]
    lines = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    attacked = [x for x in lines if x["group"] == "attack:paraphrase"]
    assert len(attacked) == 4 and all("karl" not in x["prompt"] or x["variant"] in x["prompt"] for x in attacked)
    assert all(set(x["shows_key"]) == {"before", "after"} for x in attacked)
    rc = main([*common[:-3], "--attack-seed", "5", "--out", str(out), "--attack", "misspell", "--resume"])
    assert rc == 2 and "other settings (attack)" in capsys.readouterr().err
    assert main([*common, "--attack", "typo"]) == 2 and "unknown attack" in capsys.readouterr().err
