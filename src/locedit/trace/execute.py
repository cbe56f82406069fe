"""Executing a trace plan: compute this process's units (sharded by index), skip those whose
records all exist, and write one record per cell (and the PNGs) into the run's store.

A unit with any record missing is recomputed whole and only its missing records are written, so an
interrupted run resumed (or a sharded run) gets exactly the uninterrupted single-process records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from locedit.probes import Probe
from locedit.trace.engine import Tracer, UnitResult, effect
from locedit.trace.layers import UNetCell
from locedit.trace.plan import Unit
from locedit.trace.store import has_record, save_png, write_record


def cell_record(
    tracer: Tracer,
    probes: Sequence[Probe],
    unit: Unit,
    j: int,
    clean: float,
    corrupted: float,
    restored: float,
    component: str,
    noise: float,
) -> dict:
    """The record of cell `j` of `unit`: the probe, the three scores, the effect and what was restored."""
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
        "noise": noise,
    }
    if isinstance(cell, UNetCell):
        record.update(
            encoder="",
            layer=cell.label,
            token="",
            state=cell.state,
            window=len(cell.modules),
            restored_modules=list(cell.modules),
        )
    else:
        record.update(
            encoder=tracer.handles[cell.encoder].name,
            layer=cell.layer,
            token=cell.token,
            state=cell.state,
            window=len(cell.layers),
            restored_layers=list(cell.layers),
        )
    return record


def _run_unit(tracer: Tracer, probe: Probe, unit: Unit, component: str, noise: float) -> UnitResult:
    if component == "unet":
        return tracer.run_unet_unit(probe, unit.seed, noise, unit.cells)
    return tracer.run_text_unit(probe, unit.seed, noise, unit.cells)


def _save_images(out: Path, unit: Unit, result: UnitResult, missing: list[int]) -> None:
    """PNGs of the clean and corrupted images (with the unit's first cell) and of the missing cells'."""
    ids = unit.cell_ids()
    if unit.first == 0:
        stem = f"P{unit.prompt_index:04d}_S{unit.seed}"
        save_png(out, f"{stem}_clean", result.images[0])
        save_png(out, f"{stem}_corrupted", result.images[1])
    for j in missing:
        save_png(out, ids[j], result.images[2 + j])


def execute(
    tracer: Tracer,
    probes: Sequence[Probe],
    units: Sequence[Unit],
    out: Path,
    component: str,
    noise: float,
    save_images: bool = False,
    rank: int = 0,
    world: int = 1,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Compute this rank's units (index % world == rank), skipping units whose records all exist.

    Returns the number of units computed. `progress(n)` is called after each of this rank's units
    (computed or skipped) with the number of cells it covers.
    """
    computed = 0
    for index, unit in enumerate(units):
        if index % world != rank:
            continue
        ids = unit.cell_ids()
        missing = [j for j, cid in enumerate(ids) if not has_record(out, cid)]
        if missing:
            result = _run_unit(tracer, probes[unit.prompt_index], unit, component, noise)
            if save_images:
                _save_images(out, unit, result, missing)
            for j in missing:
                write_record(
                    out,
                    cell_record(
                        tracer, probes, unit, j, result.clean, result.corrupted, result.restored[j], component, noise
                    ),
                )
            computed += 1
        if progress is not None:
            progress(len(ids))
    return computed
