"""Which probe file a run reads (runner.probe_file): "default" is the model folder's locedit_probes.jsonl when
it ships one, else the generic set; an explicit file always wins. Trace and LocoGen runs record the choice."""

from __future__ import annotations

import json
import shutil

import pytest

from locedit.builtin import builtin_path
from locedit.cli import main
from locedit.probes import DEFAULT_PROBES, MODEL_PROBES_FILE, ProbeFileError, load_probes
from locedit.trace.runner import TraceRequest, plan_trace, probe_file


def test_default_is_the_model_folders_file_else_the_generic_set(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert probe_file("default", folder) == DEFAULT_PROBES
    assert probe_file("default", "/no/such/model") == DEFAULT_PROBES  # a missing model fails at loading, not here
    own = folder / MODEL_PROBES_FILE
    own.write_text(json.dumps({"prompt": "a red cat", "subject": "cat", "attribute": "object"}) + "\n")
    assert probe_file("default", folder) == own
    assert probe_file("default", str(folder)) == own
    explicit = tmp_path / "mine.jsonl"
    assert probe_file(str(explicit), folder) == explicit  # an explicit file wins, even when the folder has one
    assert probe_file("default", "builtin:shapes") == builtin_path("shapes") / MODEL_PROBES_FILE


def test_builtin_shapes_default_probes_fit_its_tokenizer(tmp_path):
    """`locedit trace builtin:shapes` without --probes validates (the generic set is too long for its 16-token
    context); plan_trace loads the model and validates the probes against its tokenizer, writing nothing."""
    from locedit.models import load_pipeline

    pipe = load_pipeline("builtin:shapes")
    req = TraceRequest(model="builtin:shapes", out=str(tmp_path / "run"), component="text-encoder", layers=["attn"])
    plan = plan_trace(req, pipe=pipe)
    shipped = builtin_path("shapes") / MODEL_PROBES_FILE
    assert plan.probes == load_probes(shipped) and len(plan.probes) == 5
    assert plan.config["probes_source"] == "default" and plan.config["probes_file"] == str(shipped.resolve())
    assert not (tmp_path / "run").exists()
    # the generic set, asked for explicitly, is what used to fail
    with pytest.raises(ProbeFileError, match="longer than the context"):
        plan_trace(
            TraceRequest(model="builtin:shapes", out=str(tmp_path / "run"), probes=str(DEFAULT_PROBES)), pipe=pipe
        )


@pytest.fixture
def own_probes_model(tiny_dirs, tmp_path):
    """A copy of the tiny SD1 folder that ships one probe (with an altered prompt, for LocoGen)."""
    folder = shutil.copytree(tiny_dirs["sd1"], tmp_path / "model")
    record = {"prompt": "a photo of a red cat", "subject": "cat", "attribute": "object", "altered": "a photo of a dog"}
    (folder / MODEL_PROBES_FILE).write_text(json.dumps(record) + "\n")
    return folder


def test_trace_cli_says_and_records_which_default_set_it_traced(own_probes_model, tmp_path, capsys):
    explicit = tmp_path / "mine.jsonl"
    records = [
        {"prompt": f"a photo of a {word} cat", "subject": word, "attribute": "colour"} for word in ("red", "blue")
    ]
    explicit.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = ["trace", str(own_probes_model), "--steps", "1", "--layers", "block", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "own")]) == 0
    out = capsys.readouterr().out
    own = own_probes_model / MODEL_PROBES_FILE
    assert f"probes: default = {own} (1 probes)" in out.splitlines()
    config = json.loads((tmp_path / "own" / "config.json").read_text())
    assert config["probes_file"] == str(own.resolve()) and [p["prompt"] for p in config["probes"]] == [
        "a photo of a red cat"
    ]
    assert main([*base, "--probes", str(explicit), "--out", str(tmp_path / "explicit")]) == 0
    out = capsys.readouterr().out
    config = json.loads((tmp_path / "explicit" / "config.json").read_text())
    assert config["probes_file"] == str(explicit.resolve()) and len(config["probes"]) == 2
    assert "probes:" not in out  # the user named the file


def test_locogen_default_probes_are_the_model_folders(own_probes_model, tmp_path):
    from locedit.trace.locogen import LocoGenRequest, plan_locogen

    plan = plan_locogen(LocoGenRequest(model=str(own_probes_model), out=str(tmp_path / "r"), probes="default"))
    assert [p.altered for p in plan.probes] == ["a photo of a dog"]
    assert plan.config["probes_file"] == str((own_probes_model / MODEL_PROBES_FILE).resolve())
