"""The plan of a trace run: its work units (prompt, seed, a batch of cells) and the cells' ids.

A unit is (prompt, seed, up to `batch` consecutive cells); its composition depends only on the
config, so a resumed or sharded run computes every cell in the same batch as an uninterrupted
single-process run and gets bitwise the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from locedit.probes import Probe
from locedit.trace.engine import TextCell
from locedit.trace.layers import UNetCell


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
    """The id of cell `index` of probe `prompt_index` under `seed`: P{prompt:04d}_S{seed}_C{cell:05d}."""
    return f"P{prompt_index:04d}_S{seed}_C{index:05d}"


def plan_units(
    probes: Sequence[Probe], seeds: Sequence[int], cells_of: Callable[[int], Sequence], batch: int
) -> list[Unit]:
    """Units in run order: probes × seeds × chunks of `batch` cells (`cells_of(prompt_index)`)."""
    units = []
    for pi in range(len(probes)):
        cells = list(cells_of(pi))
        for seed in seeds:
            for first in range(0, len(cells), batch):
                units.append(Unit(pi, seed, first, tuple(cells[first : first + batch])))
    return units
