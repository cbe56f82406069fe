"""CLI: edit / apply / info end to end, saved pipelines load with plain diffusers, bad input exits 2 writing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from locedit.cli import main


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def test_edit_apply_info_roundtrip(tiny_dirs, tmp_path, capsys):
    model = str(tiny_dirs["sd1"])
    out = tmp_path / "out"
    rc = main(
        [
            "edit",
            model,
            "--remove",
            "van gogh",
            "--to",
            "painting",
            "--preserve",
            "monet",
            "--out",
            str(out / "e.safetensors"),
            "--lora",
            str(out / "l.safetensors"),
            "--lora-format",
            "kohya",
            "--save-pipeline",
            str(out / "pipe"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "edit took" in printed and "'van gogh' -> 'painting'" in printed

    # A saved pipeline loads with plain diffusers and differs from the base only in the edited tensor.
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.from_pretrained(str(out / "pipe"), local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        base_file = next((tiny_dirs["sd1"] / component).glob("*.safetensors"))
        new_file = next((out / "pipe" / component).glob("*.safetensors"))
        base, new = load_file(str(base_file)), load_file(str(new_file))
        assert base.keys() == new.keys()
        differ = [k for k in base if not torch.equal(base[k], new[k])]
        assert differ == (
            [next(k for k in base if k.endswith("layers.0.self_attn.v_proj.weight"))]
            if component == "text_encoder"
            else []
        )

    assert main(["apply", model, str(out / "e.safetensors"), "--save-pipeline", str(out / "pipe2")]) == 0
    a = load_file(str(next((out / "pipe" / "text_encoder").glob("*.safetensors"))))
    b = load_file(str(next((out / "pipe2" / "text_encoder").glob("*.safetensors"))))
    assert all(torch.equal(a[k], b[k]) for k in a)

    capsys.readouterr()
    assert main(["info", model, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "sd1" and info["editable_layers"] == [
        "text_encoder.text_model.encoder.layers.0.self_attn.v_proj.weight",
        "text_encoder.text_model.encoder.layers.0.self_attn.out_proj.weight",
    ]


def test_python_dash_m_entry_point(tiny_dirs):
    proc = subprocess.run(
        [sys.executable, "-m", "locedit", "info", str(tiny_dirs["sdxl"])], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "family:      sdxl" in proc.stdout


def run_with_closed_stdout(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m locedit ARGV` whose reader has gone before it writes a byte (as `| head -1` once it has
    its line): every write to stdout fails with EPIPE."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "locedit", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(), None, err)


@pytest.mark.parametrize("command", ["info", "--help"])
def test_a_closed_stdout_ends_quietly(tiny_dirs, command):
    proc = run_with_closed_stdout(["info", str(tiny_dirs["sdxl"])] if command == "info" else [command])
    # argparse ignores a failed write of its help and exits 0; only the flush at exit was left to fail
    assert proc.returncode == (141 if command == "info" else 0), proc.stderr
    for noise in ("Traceback", "BrokenPipeError", "Exception ignored", "internal error"):
        assert noise not in proc.stderr


BAD_EDIT_ARGS = {
    "remove without to": (["--remove", "van gogh"], "--remove and --to go together"),
    "malformed pair": (["--pair", "van gogh"], "not KEY=VALUE"),
    "nothing to edit": ([], "nothing to edit"),
    "templates file missing": (["--remove", "a", "--to", "b", "--templates", "/no/such/file"], "does not exist"),
    "bad lam": (["--remove", "a", "--to", "b", "--lam", "0"], "--lam must be > 0"),
    "bad encoder": (["--remove", "a", "--to", "b", "--encoder", "2"], "does not exist in this sd1 pipeline"),
    "subject not found": (["--remove", "van gogh", "--to", "b", "--templates", "TEMPLATES_S"], "does not occur"),
    "template without slot": (["--remove", "a", "--to", "b", "--templates", "TEMPLATES_NOSLOT"], "exactly once"),
    "caption too long": (["--remove", "a", "--to", "b", "--templates", "TEMPLATES_LONG"], "context is 77"),
    "bad dtype": (["--remove", "a", "--to", "b", "--dtype", "float8"], "unknown dtype"),
    "corpus file missing": (["--remove", "a", "--to", "b", "--corpus", "/no/such/corpus.txt"], "does not exist"),
    "negative corpus weight": (
        ["--remove", "a", "--to", "b", "--corpus-weight", "-1"],
        "--corpus-weight / corpus_weight must be >= 0",
    ),
    "negative corpus keys": (
        ["--remove", "a", "--to", "b", "--corpus-keys", "-2"],
        "--corpus-keys / corpus_keys must be >= 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EDIT_ARGS))
def test_bad_edit_input_exits_2_and_writes_nothing(case, tiny_dirs, tmp_path, capsys):
    args, message = BAD_EDIT_ARGS[case]
    templates = {
        "TEMPLATES_S": "paintings by {}s\n",
        "TEMPLATES_NOSLOT": "a photo\n",
        "TEMPLATES_LONG": " ".join(["very"] * 80) + " {}\n",
    }
    args = [str(_write(tmp_path, a, templates[a])) if a in templates else a for a in args]
    before = files_under(tmp_path)
    out = tmp_path / "out"
    rc = main(
        [
            "edit",
            str(tiny_dirs["sd1"]),
            *args,
            "--out",
            str(out / "e.safetensors"),
            "--lora",
            str(out / "l.safetensors"),
            "--save-pipeline",
            str(out / "pipe"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1  # one line
    assert files_under(tmp_path) == before


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "model_case, message",
    [("missing", "does not exist"), ("not_pipeline", "model_index.json"), ("unsupported", "FluxPipeline")],
)
def test_bad_model_exits_2(model_case, message, tmp_path, capsys):
    model = tmp_path / "model"
    if model_case != "missing":
        model.mkdir()
        (model / ("model_index.json" if model_case == "unsupported" else "weights.bin")).write_text(
            json.dumps({"_class_name": "FluxPipeline"})
        )
    before = files_under(tmp_path)
    rc = main(["edit", str(model), "--remove", "a", "--to", "b", "--out", str(tmp_path / "e.safetensors")])
    assert rc == 2 and message in capsys.readouterr().err
    assert files_under(tmp_path) == before


def test_save_pipeline_into_nonempty_folder_is_refused(tiny_dirs, tmp_path, capsys):
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "keep.txt").write_text("x")
    rc = main(["edit", str(tiny_dirs["sd1"]), "--remove", "a", "--to", "b", "--save-pipeline", str(tmp_path / "pipe")])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "pipe").iterdir()] == ["keep.txt"]


def test_apply_refuses_other_model_and_bad_files(tiny_dirs, tmp_path, capsys):
    edit = tmp_path / "e.safetensors"
    assert main(["edit", str(tiny_dirs["sd1"]), "--remove", "van gogh", "--to", "painting", "--out", str(edit)]) == 0
    capsys.readouterr()
    before = files_under(tmp_path)
    assert main(["apply", str(tiny_dirs["sd2"]), str(edit), "--save-pipeline", str(tmp_path / "p")]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert (
        main(
            ["apply", str(tiny_dirs["sd1"]), str(tmp_path / "none.safetensors"), "--save-pipeline", str(tmp_path / "p")]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "striped",
            "plian",
            "value 'plian': no caption of the model names it (closest words in its captions to 'plian': 'plain'",
        ),
        ("van", "plain", "key 'van': no caption of the model names it"),
    ],
)
def test_typos_are_refused_unless_forced(key, value, message, tmp_path, capsys):
    """builtin:shapes ships its captions: a key or value none of them names is no edit, unless --force."""
    out = tmp_path / "e.safetensors"
    rc = main(["edit", "builtin:shapes", "--remove", key, "--to", value, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "--force" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    assert main(["edit", "builtin:shapes", "--remove", key, "--to", value, "--out", str(out), "--force"]) == 0
    assert "note: editing anyway (--force): " + message in capsys.readouterr().out
    assert out.is_file()


def test_known_concepts_of_the_builtin_model_edit(tmp_path):
    out = tmp_path / "e.safetensors"
    assert main(["edit", "builtin:shapes", "--remove", "striped", "--to", "plain", "--out", str(out)]) == 0
    assert out.is_file()


def test_internal_error_shows_its_traceback_and_exits_1(tiny_dirs, monkeypatch, capsys):
    from locedit.commands import info as info_command

    def broken(pipe):
        raise RuntimeError("forced internal error")

    monkeypatch.setattr("locedit.models.detect_family", broken)
    rc = main(["info", str(tiny_dirs["sd1"])])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback (most recent call last)" in err and "forced internal error" in err
    assert "internal error" in err.splitlines()[-1]
    assert info_command.run  # the command module itself is intact
    # user errors stay one line, exit 2
    assert main(["info", str(tiny_dirs["sd1"]) + "-missing"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
