"""Result store, plan and execution: resuming a run stopped midway (by its progress callback, as a
kill would) gives the uninterrupted table; a 2-process sharded run (torchrun, gloo on CPU) gives
exactly the single-process table; run-dir misuse is refused."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from locedit.cli import main
from locedit.trace import GenerationSettings, TraceRequest, plan_trace, run_trace
from locedit.trace.execute import execute
from locedit.trace.store import prepare_run_dir, write_results


def _args(model, probes, out, *extra):
    return [
        "trace",
        str(model),
        "--probes",
        str(probes),
        "--steps",
        "2",
        "--guidance",
        "5",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


UNET = ("--layers", "attn2,block", "--batch", "2")


class Killed(Exception):
    """What the progress callback raises to stop a run midway, as a kill would."""


def _kill_after(units: int):
    """A progress callback that lets `units` units finish, then stops the run."""
    done = []

    def progress(cells: int) -> None:
        done.append(cells)
        if len(done) == units:
            raise Killed

    return progress


def _request(model, probes, out, resume=False) -> TraceRequest:
    return TraceRequest(
        model=str(model),
        out=str(out),
        probes=str(probes),
        layers=["attn2", "block"],
        batch=2,
        generation=GenerationSettings(steps=2, guidance=5.0),
        resume=resume,
    )


def test_resume_after_an_interrupted_run_matches_uninterrupted(tiny_dirs, probe_file, tmp_path):
    model = tiny_dirs["sd1"]
    reference = run_trace(_request(model, probe_file, tmp_path / "ref")).read_text()
    total = len(reference.splitlines()) - 1
    assert total == 2 * 12  # 12 units of 2 cells

    out = tmp_path / "killed"
    plan = plan_trace(_request(model, probe_file, out))
    prepare_run_dir(out, plan.config, resume=False)
    with pytest.raises(Killed):
        execute(plan.tracer, plan.probes, plan.units, out, "unet", plan.noise, progress=_kill_after(3))
    records = sorted((out / "cells").glob("*.json"))
    assert [p.stem for p in records] == [f"P0000_S0_C{i:05d}" for i in range(6)]
    assert not (out / "results.csv").exists()
    records.pop().unlink()  # as if killed between the two record writes of the third unit
    kept = {p: p.stat().st_mtime_ns for p in records}

    resumed = plan_trace(_request(model, probe_file, out, resume=True))
    prepare_run_dir(out, resumed.config, resume=True)
    covered = []
    computed = execute(
        resumed.tracer, resumed.probes, resumed.units, out, "unet", resumed.noise, progress=covered.append
    )
    assert computed == 12 - 2 and sum(covered) == total  # the cut unit again, whole; the two finished ones not
    assert write_results(out, resumed.units).read_text() == reference
    assert {p: p.stat().st_mtime_ns for p in records} == kept  # records of the killed run are not rewritten
    assert len(list((out / "cells").glob("*.json"))) == total and not list(out.rglob("*.tmp"))


def test_resume_of_finished_run_computes_nothing(tiny_dirs, probe_file, tmp_path):
    out = tmp_path / "run"
    assert main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "block", "--batch", "4", "--save-images")) == 0
    pngs = {p.name for p in (out / "images").iterdir()}
    assert {"P0000_S0_clean.png", "P0001_S0_corrupted.png", "P0001_S0_C00004.png"} <= pngs and len(pngs) == 2 * (2 + 5)
    baselines = _rows(out / "baselines.csv")
    assert [b["prompt_index"] for b in baselines] == ["0", "1"] and float(baselines[0]["score_clean"]) == 1.0
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    stale = out / "cells" / ".P0000_S0_C00009.json.x1y2.tmp"  # what a kill during a write leaves
    stale.write_text("{")
    assert (
        main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "block", "--batch", "4", "--save-images", "--resume"))
        == 0
    )
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before and not stale.exists()


def test_run_dir_misuse_is_refused(tiny_dirs, probe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "block")) == 0
    config = (out / "config.json").read_text()
    assert main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "block")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "attn1", "--resume")) == 2
    assert "different run" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config


def test_config_records_noise_and_std(tiny_dirs, probe_file, tmp_path):
    out = tmp_path / "run"
    assert (
        main(_args(tiny_dirs["sd1"], probe_file, out, "--layers", "block", "--noise", "auto", "--min-drop", "0.001"))
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["noise_spec"] == "auto" and config["noise"] >= 3.0
    assert config["noise_destroyed_fraction"] >= 0.8
    assert config["embedding_std"]["text_encoder"] > 0
    rows = _rows(out / "results.csv")
    assert {r["state"] for r in rows} == {"block"} and all(r["token"] == "" for r in rows)


def test_two_process_sharded_run_equals_single_process(tiny_dirs, probe_file, tmp_path):
    model = tiny_dirs["sd1"]
    te = ("--component", "text-encoder", "--layers", "residual", "--batch", "16")
    assert main(_args(model, probe_file, tmp_path / "single", *te)) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "locedit",
        *_args(model, probe_file, tmp_path / "sharded", *te),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = (tmp_path / "single" / "results.csv").read_text()
    assert (tmp_path / "sharded" / "results.csv").read_text() == single
    assert (
        len(_rows(tmp_path / "single" / "results.csv")) == (7 + 1 + 9 + 1) * 4
    )  # tokens incl. BOS/EOS, + padding row, × 4 layers
