"""The result store of a trace run: config.json, one atomically written JSON record per cell,
optional PNGs, and results.csv; plus the plan of work units and their (sharded, resumable) execution.

Layout of a run directory:

    config.json                      everything that defines the run (and ν, embedding stds used)
    cells/P{prompt:04d}_S{seed}_C{cell:05d}.json   one record per cell
    images/P…_S…_clean.png, …_corrupted.png, …_C{cell}.png   with --save-images
    results.csv                      one row per cell, written by rank 0 when every cell is done
    baselines.csv                    per (prompt, seed): clean and corrupted scores, destroyed flag

A unit is (prompt, seed, up to `batch` consecutive cells); its composition depends only on the
config, so a resumed or sharded run computes every cell in the same batch as an uninterrupted
single-process run and gets bitwise the same numbers. A unit with any record missing is recomputed
whole and only its missing records are written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from locedit.errors import LoceditError
from locedit.io import atomic_path, write_json
from locedit.probes import Probe
from locedit.trace.engine import TextCell, Tracer, effect
from locedit.trace.layers import UNetCell

CSV_COLUMNS = (
    "cell_id", "prompt_index", "prompt", "subject", "attribute", "seed", "component", "encoder", "layer",
    "token", "state", "window", "score_clean", "score_corrupted", "score_restored", "effect", "destroyed",
)
BASELINE_COLUMNS = ("prompt_index", "prompt", "subject", "attribute", "seed", "score_clean", "score_corrupted",
                    "destroyed", "noise")
# Keys of config.json that must match for --resume to continue a run.
RUN_KEYS = (
    "model", "family", "component", "probes", "seeds", "layers", "window", "noise", "steps", "guidance", "batch",
    "restore", "scorer", "min_drop", "height", "width", "dtype", "cells",
)
# Seconds to sleep after each unit (testing aid: lets a test kill a run midway). Unset = 0.
DELAY_ENV = "LOCEDIT_TRACE_UNIT_DELAY"


class RunDirError(LoceditError, FileExistsError):
    """The --out directory holds something that is not this run (or --resume is missing)."""


@dataclass(frozen=True)
class Unit:
    """One lockstep loop: probe `prompt_index`, `seed`, and cells `first .. first + len(cells)`."""

    prompt_index: int
    seed: int
    first: int
    cells: tuple[UNetCell | TextCell, ...]

    def cell_ids(self) -> list[str]:
        return [cell_id(self.prompt_index, self.seed, self.first + j) for j in range(len(self.cells))]


def cell_id(prompt_index: int, seed: int, index: int) -> str:
    return f"P{prompt_index:04d}_S{seed}_C{index:05d}"


def plan_units(probes: Sequence[Probe], seeds: Sequence[int], cells_of: Callable[[int], Sequence],
               batch: int) -> list[Unit]:
    """Units in run order: probes × seeds × chunks of `batch` cells (`cells_of(prompt_index)`)."""
    units = []
    for pi in range(len(probes)):
        cells = list(cells_of(pi))
        for seed in seeds:
            for first in range(0, len(cells), batch):
                units.append(Unit(pi, seed, first, tuple(cells[first:first + batch])))
    return units


def prepare_run_dir(out: Path, config: dict, resume: bool) -> dict:
    """Create `out` with config.json, or check it holds the same run when resuming.

    Returns the stored config (on resume, its recorded ν is the one to use). Raises RunDirError.
    """
    stored_path = out / "config.json"
    if out.exists() and any(out.iterdir()):
        if not stored_path.is_file():
            raise RunDirError(f"--out {str(out)!r} exists and is not a trace run; choose an empty or new folder")
        if not resume:
            raise RunDirError(f"--out {str(out)!r} already holds a trace run; pass --resume to continue it "
                              "or choose a new folder")
        stored = json.loads(stored_path.read_text())
        for key in RUN_KEYS:
            if key == "noise" and config.get("noise_spec") == "auto" and stored.get("noise_spec") == "auto":
                continue  # auto: the recorded ν is used
            if stored.get(key) != config.get(key):
                raise RunDirError(f"--out {str(out)!r} holds a different run ({key} was {stored.get(key)!r}, now "
                                  f"{config.get(key)!r}); resume with the same options or choose a new folder")
        # Temporaries of writes a kill interrupted (never renamed into place): nothing reads them.
        for stale in [*out.glob("cells/.*.tmp"), *out.glob("images/.*.tmp"), *out.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)
        return stored
    out.mkdir(parents=True, exist_ok=True)
    write_json(stored_path, config)
    return config


def _cell_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.json"


def _save_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def cell_record(tracer: Tracer, probes: Sequence[Probe], unit: Unit, j: int, clean: float, corrupted: float,
                restored: float, component: str, nu: float) -> dict:
    probe = probes[unit.prompt_index]
    cell = unit.cells[j]
    record = {
        "cell_id": unit.cell_ids()[j],
        "prompt_index": unit.prompt_index,
        **probe.to_dict(),
        "seed": unit.seed,
        "component": component,
        "score_clean": clean,
        "score_corrupted": corrupted,
        "score_restored": restored,
        "effect": effect(clean, corrupted, restored),
        "destroyed": bool(tracer.destroyed(clean, corrupted)),
        "noise": nu,
    }
    if isinstance(cell, UNetCell):
        record.update(encoder="", layer=cell.label, token="", state=cell.state, window=len(cell.modules),
                      restored_modules=list(cell.modules))
    else:
        record.update(encoder=tracer.handles[cell.encoder].name, layer=cell.layer, token=cell.token,
                      state=cell.state, window=len(cell.layers), restored_layers=list(cell.layers))
    return record


def execute(tracer: Tracer, probes: Sequence[Probe], units: Sequence[Unit], out: Path, component: str,
            nu: float, save_images: bool = False, rank: int = 0, world: int = 1,
            progress: Callable[[int], None] | None = None) -> int:
    """Compute this rank's units (index % world == rank), skipping units whose records all exist.

    Returns the number of units computed. `progress(n)` is called with the cells each unit covers.
    """
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    computed = 0
    for index, unit in enumerate(units):
        if index % world != rank:
            continue
        ids = unit.cell_ids()
        missing = [j for j, cid in enumerate(ids) if not _cell_path(out, cid).is_file()]
        if missing:
            probe = probes[unit.prompt_index]
            if component == "unet":
                result = tracer.run_unet_unit(probe, unit.seed, nu, unit.cells)
            else:
                result = tracer.run_text_unit(probe, unit.seed, nu, unit.cells)
            if save_images:
                stem = f"P{unit.prompt_index:04d}_S{unit.seed}"
                if unit.first == 0:
                    _save_png(out / "images" / f"{stem}_clean.png", result.images[0])
                    _save_png(out / "images" / f"{stem}_corrupted.png", result.images[1])
                for j in missing:
                    _save_png(out / "images" / f"{ids[j]}.png", result.images[2 + j])
            for j in missing:
                record = cell_record(tracer, probes, unit, j, result.clean, result.corrupted, result.restored[j],
                                     component, nu)
                write_json(_cell_path(out, ids[j]), record)
            computed += 1
            if delay:
                time.sleep(delay)
        if progress is not None:
            progress(len(ids))
    return computed


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
            baselines.setdefault((unit.prompt_index, unit.seed), [
                record["prompt_index"], record["prompt"], record["subject"], record["attribute"], record["seed"],
                record["score_clean"], record["score_corrupted"], record["destroyed"], record["noise"]])
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
        raise FileNotFoundError(f"{str(path)!r} not found; is {str(run_dir)!r} a finished trace run? "
                                "(resume it with `locedit trace ... --resume` to finish it)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
