"""The result store of a trace run: its directory, config.json, one atomically written JSON record
per cell, optional PNGs, results.csv and baselines.csv (the plan is plan.py, its execution execute.py).

Layout of a run directory:

    config.json                      everything that defines the run (and the noise scale, embedding stds used)
    cells/P{prompt:04d}_S{seed}_C{cell:05d}.json   one record per cell
    images/P…_S…_clean.png, …_corrupted.png, …_C{cell}.png   with --save-images
    results.csv                      one row per cell, written by rank 0 when every cell is done
    baselines.csv                    per (prompt, seed): clean and corrupted scores, destroyed flag

A record is written whole or not at all, so the records present are the work done: resuming checks
the stored config (`prepare_run_dir`) and computes only the cells without a record.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from locedit.errors import LoceditError
from locedit.io import atomic_path, write_json
from locedit.trace.plan import Unit

CSV_COLUMNS = (
    "cell_id",
    "prompt_index",
    "prompt",
    "subject",
    "attribute",
    "seed",
    "component",
    "encoder",
    "layer",
    "token",
    "state",
    "window",
    "score_clean",
    "score_corrupted",
    "score_restored",
    "effect",
    "destroyed",
)
BASELINE_COLUMNS = (
    "prompt_index",
    "prompt",
    "subject",
    "attribute",
    "seed",
    "score_clean",
    "score_corrupted",
    "destroyed",
    "noise",
)
# Keys of config.json that must match for --resume to continue a run.
RUN_KEYS = (
    "model",
    "family",
    "component",
    "probes",
    "seeds",
    "layers",
    "window",
    "noise",
    "steps",
    "guidance",
    "batch",
    "restore",
    "scorer",
    "min_drop",
    "height",
    "width",
    "dtype",
    "cells",
)


class RunDirError(LoceditError, FileExistsError):
    """The --out directory holds something that is not this run (or --resume is missing)."""


def prepare_run_dir(out: Path, config: dict, resume: bool, kind: str = "trace run") -> dict:
    """Create `out` with config.json, or check it holds the same run when resuming.

    `kind` names the run in the errors ("trace run", "LocoGen run"). Returns the stored config (on resume,
    its recorded noise scale is the one to use). Raises RunDirError.
    """
    stored_path = out / "config.json"
    if out.exists() and any(out.iterdir()):
        if not stored_path.is_file():
            raise RunDirError(f"--out {str(out)!r} exists and is not a {kind}; choose an empty or new folder")
        if not resume:
            raise RunDirError(
                f"--out {str(out)!r} already holds a {kind}; pass --resume to continue it or choose a new folder"
            )
        stored = json.loads(stored_path.read_text())
        for key in RUN_KEYS:
            if key == "noise" and config.get("noise_spec") == "auto" and stored.get("noise_spec") == "auto":
                continue  # auto: the recorded noise scale is used
            if stored.get(key) != config.get(key):
                raise RunDirError(
                    f"--out {str(out)!r} holds a different run ({key} was {stored.get(key)!r}, now "
                    f"{config.get(key)!r}); resume with the same options or choose a new folder"
                )
        # Temporaries of writes a kill interrupted (never renamed into place): nothing reads them.
        for stale in [*out.glob("cells/.*.tmp"), *out.glob("images/.*.tmp"), *out.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)
        return stored
    out.mkdir(parents=True, exist_ok=True)
    write_json(stored_path, config)
    return config


def _cell_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.json"


def has_record(out: Path, cid: str) -> bool:
    """Whether the run in `out` holds the record of cell `cid`."""
    return _cell_path(out, cid).is_file()


def write_record(out: Path, record: dict) -> None:
    """Write one cell's record (its "cell_id" names the file), atomically."""
    write_json(_cell_path(out, record["cell_id"]), record)


def save_png(out: Path, name: str, image: torch.Tensor) -> None:
    """Write `image` (3, H, W) float in [0, 1] as images/`name`.png of the run in `out`, atomically."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(out / "images" / f"{name}.png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_results(out: Path, units: Sequence[Unit]) -> Path:
    """results.csv from the cell records, in plan order; raises if a record is missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    missing = []
    baselines: dict[tuple[int, int], list] = {}
    for unit in units:
        for cid in unit.cell_ids():
            path = _cell_path(out, cid)
            if not path.is_file():
                missing.append(cid)
                continue
            record = json.loads(path.read_text())
            writer.writerow([_csv_value(record.get(col)) for col in CSV_COLUMNS])
            baselines.setdefault(
                (unit.prompt_index, unit.seed),
                [
                    record["prompt_index"],
                    record["prompt"],
                    record["subject"],
                    record["attribute"],
                    record["seed"],
                    record["score_clean"],
                    record["score_corrupted"],
                    record["destroyed"],
                    record["noise"],
                ],
            )
    if missing:
        raise RuntimeError(f"{len(missing)} cell record(s) missing in {out} (e.g. {missing[0]}); rerun with --resume")
    base = io.StringIO()
    base_writer = csv.writer(base, lineterminator="\n")
    base_writer.writerow(BASELINE_COLUMNS)
    for row in baselines.values():
        base_writer.writerow([_csv_value(v) for v in row])
    with atomic_path(out / "baselines.csv") as tmp:
        tmp.write_text(base.getvalue())
    target = out / "results.csv"
    with atomic_path(target) as tmp:
        tmp.write_text(buffer.getvalue())
    return target


def read_results(run_dir: str | Path) -> list[dict]:
    """Rows of a run's results.csv as dicts (strings; effect "" when undefined)."""
    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found; is {str(run_dir)!r} a finished trace run? "
            "(resume it with `locedit trace ... --resume` to finish it)"
        )
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
