"""Fixtures of the report tests: one small run of each kind (trace, eval, comparison), made once per
session, and a headless Chromium (Debian's `chromium`) for the browser check of the HTML report.

Chromium is looked up on PATH (or $LOCEDIT_CHROMIUM). When it is missing, the fixture installs it with
apt-get only where that is allowed — running as root, and in CI (CI=true) or with
LOCEDIT_INSTALL_CHROMIUM=1 — and otherwise skips the browser tests, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from locedit.cli import main

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_TIMEOUT_S = 900  # an install of chromium and its libraries on a fresh machine


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) binary: $LOCEDIT_CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    given = os.environ.get("LOCEDIT_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _install_allowed() -> str | None:
    """None when the tests may apt-get chromium here, else why not."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
    if not (ci or os.environ.get("LOCEDIT_INSTALL_CHROMIUM") == "1"):
        return "not in CI and LOCEDIT_INSTALL_CHROMIUM=1 is not set"
    if os.geteuid() != 0:
        return "not running as root (apt-get needs it)"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    return None


def _apt_install() -> str:
    """Install Debian's chromium (after `apt-get update` if a plain install fails); '' or the last error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    error = ""
    for steps in ([install], [["apt-get", "update", "-q"], install]):
        try:
            for step in steps:
                subprocess.run(step, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=True)
            return ""
        except subprocess.CalledProcessError as err:
            lines = (err.stderr or err.stdout or "").strip().splitlines()
            error = lines[-1] if lines else f"{' '.join(step)}: exit {err.returncode}"
        except (OSError, subprocess.TimeoutExpired) as err:
            error = str(err)
    return error


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium binary, installed with apt-get where allowed; else the test is skipped."""
    found = find_chromium()
    if found:
        return found
    why_not = _install_allowed()
    if why_not:
        pytest.skip(
            f"headless Chromium not found (looked for {', '.join(CHROMIUM_NAMES)} and $LOCEDIT_CHROMIUM) and not "
            f"installed by the tests: {why_not}. Install Debian's `chromium` package to run this check"
        )
    error = _apt_install()
    found = find_chromium()
    if not found:
        pytest.skip(f"headless Chromium could not be installed with apt-get ({error or 'no binary after install'})")
    return found


@pytest.fixture(scope="session")
def trace_run(tiny_dirs, tmp_path_factory) -> Path:
    """A finished UNet trace run of the tiny SD1 model: one probe, two seeds, one step, whole blocks."""
    root = tmp_path_factory.mktemp("trace_run")
    probes = root / "probes.jsonl"
    probes.write_text(json.dumps({"prompt": "a red cat", "subject": "cat", "attribute": "object"}) + "\n")
    out = root / "run"
    args = ["trace", str(tiny_dirs["sd1"]), "--probes", str(probes), "--steps", "1", "--seeds", "0,1"]
    assert main([*args, "--layers", "block", "--min-drop", "0", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory) -> Path:
    """A finished `locedit eval` run on builtin:shapes (striped → plain; one item per group, two steps)."""
    root = tmp_path_factory.mktemp("eval_run")
    with pytest.MonkeyPatch.context() as mp:  # the edit's moment cache stays out of the user's ~/.cache
        mp.setenv("LOCEDIT_CACHE", str(root / "cache"))
        edit = root / "striped.safetensors"
        assert (
            main(["edit", "builtin:shapes", "--remove", "striped", "--to", "plain", "--out", str(edit), "--quiet"]) == 0
        )
        out = root / "run"
        args = ["eval", "builtin:shapes", str(edit), "--per-group", "1", "--steps", "2", "--out", str(out), "--quiet"]
        assert main(args) == 0
    return out


COMPARISON_ROWS = [
    # use, method, setting, group, rate, lo, hi, n, edit_s, speedup, drift
    ("style", "quickfix", "default", "efficacy", 1.0, 0.89, 1.0, 30, 0.07, 1, 0.01),
    ("style", "quickfix", "default", "neighbours", 0.97, 0.83, 0.99, 30, 0.07, 1, 0.01),
    ("style", "esd-x", "default", "efficacy", 0.9, 0.74, 0.97, 30, 812.5, 11607, 0.12),
    ("style", "esd-x", "default", "neighbours", 0.8, 0.63, 0.9, 30, 812.5, 11607, 0.12),
    ("style", "esd-x", "matched", "efficacy", 1.0, 0.89, 1.0, 30, 1650.0, 23571, 0.2),
    ("colour", "uce", "default", "efficacy", 0.93, 0.79, 0.98, 30, 0.2, 2.9, ""),
]


@pytest.fixture
def comparison_run(tmp_path) -> Path:
    """A comparison folder as benchmarks/compare_methods.py --out writes it: comparison.csv, the
    comparison.json manifest and PNG plots (one in a subfolder)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = tmp_path / "comparison"
    (folder / "plots").mkdir(parents=True)
    with (folder / "comparison.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("use", "method", "setting", "group", "rate", "lo", "hi", "n", "edit_s", "speedup", "drift"))
        writer.writerows(COMPARISON_ROWS)
    manifest = {"kind": "comparison", "model": "builtin:shapes", "n": 30, "methods": ["quickfix", "esd-x", "uce"]}
    (folder / "comparison.json").write_text(json.dumps(manifest))
    for i, path in enumerate((folder / "speed.png", folder / "plots" / "tradeoff.png")):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [i, 1 + i, 0])
        fig.savefig(path)
        plt.close(fig)
    return folder
