"""The summary of a LocoGen run (locedit.trace.locogen): mean effect per window with a 95% interval
over (probe, seed) pairs, the window LocoGen picks per attribute (`--window auto`: the smallest m
whose best window reaches the run's threshold), and a plot of effect per window start.

Each window's value is the mean effect over the pairs whose altered prompt changed the score
(`changed`, see trace/locogen.py), with a 95% Student-t interval (heatmaps.t_interval); when no pair
of an attribute changed, all its pairs are used and the pick is flagged `changed_pairs = 0`.

Files written into the report folder (default RUNDIR/report):

    windows.csv       attribute, window, start, layers, mean, lo, hi, n per window (attribute "all": every probe)
    selection.json    {attribute: {window, start, indices, layers, mean, lo, hi, n, reached, threshold, changed_pairs}}
    locogen_effect.png   effect per window start, one line per window size, one panel per attribute
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

from locedit.io import atomic_path, write_json
from locedit.report.heatmaps import CellStat, t_interval
from locedit.trace.store import read_results

ALL = "all"  # the attribute name of the summary over every probe of the run
WINDOW_COLUMNS = ("attribute", "window", "start", "layers", "mean", "lo", "hi", "n")


def is_locogen_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a LocoGen run (its config.json says method "locogen")."""
    path = Path(run_dir) / "config.json"
    return path.is_file() and json.loads(path.read_text()).get("method") == "locogen"


def window_stats(run_dir: str | Path) -> dict[str, dict[tuple[int, int], tuple[CellStat, str]]]:
    """{attribute (and "all"): {(window, start): (mean effect with interval, layers)}} of a finished run."""
    rows = read_results(run_dir)
    groups: dict[str, dict[tuple[int, int], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = (int(row["window"]), int(row["start"]))
        groups[row["attribute"]][key].append(row)
        groups[ALL][key].append(row)
    out = {}
    for attribute, cells in groups.items():
        any_changed = any(r["changed"] == "1" for rs in cells.values() for r in rs)
        out[attribute] = {
            key: (t_interval([_effect(r) for r in rs if r["changed"] == "1" or not any_changed]), rs[0]["layers"])
            for key, rs in cells.items()
        }
    return out


def _effect(row: dict) -> float:
    return float(row["effect"]) if row.get("effect") not in (None, "") else math.nan


def _changed_pairs(rows: list[dict], attribute: str) -> int:
    pairs = {(r["prompt_index"], r["seed"]) for r in rows if r["changed"] == "1" and attribute in (ALL, r["attribute"])}
    return len(pairs)


def select_windows(run_dir: str | Path, threshold: float | None = None) -> dict[str, dict]:
    """The window LocoGen picks per attribute (and "all"): the smallest window size m whose best window
    (highest mean effect) reaches `threshold` (default: the run's), else the best window of all sizes
    (`reached` false). Indices are cross-attention layer indices (forward order)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    threshold = config["threshold"] if threshold is None else threshold
    layers = config["cross_attention"]
    rows = read_results(run_dir)
    picks = {}
    for attribute, cells in window_stats(run_dir).items():
        best_of_size: dict[int, tuple[int, CellStat]] = {}
        for (m, j), (stat, _) in sorted(cells.items()):
            mean = stat.mean if not math.isnan(stat.mean) else -math.inf
            if m not in best_of_size or mean > best_of_size[m][1].mean:
                best_of_size[m] = (j, stat)
        reached = [m for m in sorted(best_of_size) if best_of_size[m][1].mean >= threshold]
        m = reached[0] if reached else max(best_of_size, key=lambda k: best_of_size[k][1].mean)
        j, stat = best_of_size[m]
        picks[attribute] = {
            "window": m,
            "start": j,
            "indices": list(range(j, j + m)),
            "layers": layers[j : j + m],
            "mean": stat.mean,
            "lo": stat.lo,
            "hi": stat.hi,
            "n": stat.n,
            "reached": bool(reached),
            "threshold": threshold,
            "changed_pairs": _changed_pairs(rows, attribute),
        }
    return picks


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def windows_csv(run_dir: str | Path) -> str:
    """windows.csv text: every window's mean effect, interval and n per attribute."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(WINDOW_COLUMNS)
    for attribute, cells in sorted(window_stats(run_dir).items()):
        for (m, j), (stat, layers) in sorted(cells.items()):
            writer.writerow([attribute, m, j, layers, _num(stat.mean), _num(stat.lo), _num(stat.hi), stat.n])
    return buffer.getvalue()


def draw_effect_plot(run_dir: str | Path, path: str | Path) -> Path:
    """PNG of the mean effect (with 95% intervals) per window start, one line per window size and one
    panel per attribute (the pick marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = window_stats(run_dir)
    picks = select_windows(run_dir)
    attributes = [a for a in sorted(stats) if a != ALL] or [ALL]
    fig, axes = plt.subplots(1, len(attributes), figsize=(4.2 * len(attributes), 3.4), squeeze=False)
    for ax, attribute in zip(axes[0], attributes):
        by_size: dict[int, list[tuple[int, CellStat]]] = defaultdict(list)
        for (m, j), (stat, _) in sorted(stats[attribute].items()):
            by_size[m].append((j, stat))
        for m, points in sorted(by_size.items()):
            xs = [j for j, _ in points]
            means = [s.mean for _, s in points]
            err = [[0 if math.isnan(s.lo) else s.mean - s.lo for _, s in points]]
            err.append([0 if math.isnan(s.hi) else s.hi - s.mean for _, s in points])
            ax.errorbar(xs, means, yerr=err, marker="o", ms=3, capsize=2, label=f"m={m}")
        pick = picks[attribute]
        ax.plot([pick["start"]], [pick["mean"]], marker="*", ms=14, color="black", ls="none", label="pick")
        ax.axhline(pick["threshold"], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{attribute}: window m={pick['window']} at {pick['start']}", fontsize=9)
        ax.set_xlabel("window start (cross-attention layer index)")
        ax.set_ylabel("effect (share of clean→altered change)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def draw_locogen_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write windows.csv, selection.json and locogen_effect.png of a finished LocoGen run into `out`
    (default RUNDIR/report); returns their paths."""
    target = Path(out) if out is not None else Path(run_dir) / "report"
    table = target / "windows.csv"
    with atomic_path(table) as tmp:
        tmp.write_text(windows_csv(run_dir))
    selection = target / "selection.json"
    picks = select_windows(run_dir)
    write_json(selection, {a: {k: _json_value(v) for k, v in p.items()} for a, p in picks.items()})
    plot = draw_effect_plot(run_dir, target / "locogen_effect.png")
    return [plot, table, selection]


def _json_value(value):
    """NaN (no interval) as null in JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def read_selection(run_dir: str | Path, attribute: str = ALL) -> dict:
    """The pick of a LocoGen run for `attribute` ("all": over every probe), computed from its results.csv.

    Raises FileNotFoundError (via read_results) for a folder without a finished run, KeyError-free:
    an attribute the run lacks raises InvalidInputError naming those it has."""
    from locedit.errors import InvalidInputError

    if not is_locogen_run(run_dir):
        raise InvalidInputError(f"{str(run_dir)!r} is not a LocoGen run (no config.json with method locogen)")
    picks = select_windows(run_dir)
    if attribute not in picks:
        raise InvalidInputError(
            f"the LocoGen run {str(run_dir)!r} has no attribute {attribute!r}; it has {', '.join(sorted(picks))}"
        )
    return picks[attribute]
