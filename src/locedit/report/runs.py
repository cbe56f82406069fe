"""Run folders and their reports: which kind of run a folder holds (trace, eval, comparison), told by
its files, and the report (html.Report) each kind is drawn as.

The kinds form a small registry of (detector, builder) pairs, tried in order: a new kind of run is one
`register_run_kind(RunKind(...))`. A folder no kind claims is an InvalidInputError naming the files each
kind expects. This package sits below `evaluate`, so eval runs are read from their files (the formats
written by locedit.evaluate.results), not through that package.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from locedit.errors import InvalidInputError
from locedit.report.heatmaps import heatmap_png, heatmaps, n_note
from locedit.report.html import Figure, Report, Section, Table, write_html


@dataclass(frozen=True)
class RunKind:
    """One kind of run folder.

    Attributes:
        name: short name ("trace", "eval", "comparison").
        expects: the files that make a folder this kind and what writes them (for error messages).
        detect: whether a folder is this kind (looks at file names and headers only; cheap).
        build: the folder's report.
    """

    name: str
    expects: str
    detect: Callable[[Path], bool]
    build: Callable[[Path], Report]


RUN_KINDS: list[RunKind] = []


def register_run_kind(kind: RunKind, first: bool = False) -> RunKind:
    """Add `kind` to the registry (tried after the others, or before them with `first`); replaces one of its name."""
    RUN_KINDS[:] = [k for k in RUN_KINDS if k.name != kind.name]
    if first:
        RUN_KINDS.insert(0, kind)
    else:
        RUN_KINDS.append(kind)
    return kind


def detect_run(run_dir: str | Path) -> RunKind:
    """The kind of run in `run_dir` (the first registered kind that claims it); InvalidInputError if none does."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise InvalidInputError(
            f"{str(run_dir)!r} is not a folder; give a run folder (the --out of `locedit trace`, `locedit eval` "
            "or benchmarks/compare_methods.py)"
        )
    for kind in RUN_KINDS:
        if kind.detect(folder):
            return kind
    expected = "; or ".join(k.expects for k in RUN_KINDS)
    raise InvalidInputError(f"{str(run_dir)!r} is not a run folder locedit can report: expected {expected}")


def build_report(run_dir: str | Path) -> Report:
    """The report of the run in `run_dir`, of the kind detect_run finds."""
    return detect_run(run_dir).build(Path(run_dir))


def write_report_html(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Report]:
    """Write the run's report as one self-contained HTML file, `out` (default RUNDIR/report.html), atomically.

    Returns (the file, the report written)."""
    report = build_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    return write_html(report, path), report


# ---------------------------------------------------------------- helpers


def _header(path: Path) -> list[str]:
    """The first row of a CSV file ([] when absent or empty)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return next(csv.reader(f), [])


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{str(path)!r} is not valid JSON ({err.msg}); was the run finished?") from None


def _num(value, digits: int = 2) -> str:
    """A number as text with `digits` decimals; "–" for none / empty / NaN."""
    if value in (None, ""):
        return "–"
    x = float(value)
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _interval(rate, lo, hi) -> str:
    """ "rate [lo, hi]" ("–" when there is no rate)."""
    if rate in (None, "") or math.isnan(float(rate)):
        return "–"
    if lo in (None, "") or hi in (None, "") or math.isnan(float(lo)):
        return _num(rate)
    return f"{_num(rate)} [{_num(lo)}, {_num(hi)}]"


def _seconds(value) -> str:
    """Seconds as text: 3 significant digits under a second, else one decimal with thousands separators."""
    if value in (None, ""):
        return "–"
    x = float(value)
    return f"{x:.3g}" if x < 1 else f"{x:,.1f}"


def _speedup(value) -> str:
    """A speed-up ratio as "N×" (one decimal under 10)."""
    if value in (None, ""):
        return "–"
    x = float(value)
    return f"{x:.1f}×" if x < 10 else f"{x:,.0f}×"


def _compact(value) -> str:
    """A JSON value as short text: dicts as "k=v, …", lists comma-joined."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_compact(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


# ---------------------------------------------------------------- trace runs


def is_trace_run(folder: Path) -> bool:
    """results.csv (with the trace store's cell_id column), baselines.csv and config.json."""
    return (
        (folder / "config.json").is_file()
        and (folder / "baselines.csv").is_file()
        and "cell_id" in _header(folder / "results.csv")
    )


def trace_report(folder: Path) -> Report:
    """Every heatmap of the trace run (PNG: mean and 95% interval half-width) with its table of
    mean [lo, hi] and n per cell, after the run's settings and its (prompt, seed) baselines."""
    config = _read_json(folder / "config.json")
    baselines = _read_csv(folder / "baselines.csv")
    maps = heatmaps(folder)
    destroyed = sum(b["destroyed"] == "1" for b in baselines)
    summary = [
        f"model {config.get('model')} · component {config.get('component')} · scorer {config.get('scorer')}",
        f"noise {_compact(config.get('noise'))} · seeds {_compact(config.get('seeds'))} · "
        f"{config.get('steps')} steps · guidance {config.get('guidance')} · {len(config.get('probes', []))} probe(s)",
        f"the corruption destroyed the attribute in {destroyed} of {len(baselines)} (prompt, seed) pairs; "
        "heatmap cells average the destroyed pairs only (a map with none is grey and not interpretable)",
    ]
    base_table = Table(
        ["prompt", "subject", "attribute", "seed", "clean", "corrupted", "destroyed"],
        [
            [
                f"{b['prompt_index']}: {b['prompt']}",
                b["subject"],
                b["attribute"],
                b["seed"],
                _num(b["score_clean"], 3),
                _num(b["score_corrupted"], 3),
                "yes" if b["destroyed"] == "1" else "no",
            ]
            for b in baselines
        ],
        caption="scores of the clean and the corrupted image per (prompt, seed)",
        numeric=(3, 4, 5),
    )
    sections = [Section("Baselines", blocks=[base_table])]
    for h in maps:
        cells = [
            [label]
            + [
                "–" if c.n == 0 else (_interval(c.mean, c.lo, c.hi) + f" n={c.n}" if c.n > 1 else f"{_num(c.mean)} n=1")
                for c in row
            ]
            for label, row in zip(h.row_labels, h.cells)
        ]
        table = Table(
            [h.ylabel or ("layer" if h.meta.get("component") == "unet" else "row"), *h.col_labels],
            cells,
            caption=f"{h.name}: mean normalized effect [95% t-interval] and n per cell",
            numeric=tuple(range(1, len(h.col_labels) + 1)),
            collapsed=len(cells) * len(h.col_labels) > 60,
        )
        sections.append(
            Section(h.title, notes=[n_note(h)], blocks=[Figure(heatmap_png(h), f"{h.name}: {h.what}"), table])
        )
    return Report(f"Causal trace · {config.get('model')}", "trace", str(folder), summary, sections)


# ---------------------------------------------------------------- eval runs

EVAL_GROUPS = ("efficacy", "generality", "neighbours", "attributes", "entities", "other_route")  # grid order


def is_eval_run(folder: Path) -> bool:
    """results.csv (with the group and metric columns), results.json and items.jsonl, as `locedit eval` writes."""
    header = _header(folder / "results.csv")
    return (
        "group" in header
        and "metric" in header
        and (folder / "results.json").is_file()
        and (folder / "items.jsonl").is_file()
    )


def eval_report(folder: Path) -> Report:
    """Rates with Wilson 95% intervals per group (and the null control's), then per group its before/after
    image grid (grid-GROUP.png, when the run saved one; the report says so when it did not) and its items."""
    results = _read_json(folder / "results.json")
    config = results.get("config", {})
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    rows = results.get("rows", [])
    has_null = any("null_n" in r for r in rows)
    meta = config.get("edit_meta", {})
    pairs = ", ".join(f"{k} → {v}" for k, v in meta.get("pairs", [])) or "?"
    spec = results.get("specificity_min", {})
    summary = [
        f"model {config.get('model')} · edit {config.get('edit')} ({meta.get('method', '?')}: {pairs})",
        f"judge {config.get('judge')} · suite {config.get('suite')} · {config.get('steps')} steps · "
        f"guidance {config.get('guidance')} · {len(items)} item(s)",
        f"specificity (lowest kept rate of the specificity groups): {_num(spec.get('after'))}"
        + (f" (null control {_num(spec.get('null'))})" if "null" in spec else ""),
    ]
    if config.get("overlap"):
        summary.append(f"warning: {len(config['overlap'])} suite prompt(s) were fitted on: those rates are in-sample")
    columns = ["group", "metric", "k", "n", "rate [95% CI]"] + (["null control [95% CI]"] if has_null else [])
    rate_rows = [
        [r["group"], r["metric"], str(r["k"]), str(r["n"]), _interval(r["rate"], r["lo"], r["hi"])]
        + ([_interval(r.get("null_rate"), r.get("null_lo"), r.get("null_hi"))] if has_null else [])
        for r in rows
    ]
    rates = Table(
        columns,
        rate_rows,
        caption="rates over each group's applicable items, Wilson 95% intervals",
        numeric=(2, 3, 4, 5),
    )
    weight = results.get("weight", {})
    weight_rows = [
        [name, _num(w.get("rel_norm"), 3), f"{w.get('rank')} of {min(w.get('shape', [0]))}"]
        for name, w in weight.get("tensors", {}).items()
    ]
    notes = []
    if "output_change_max" in weight:
        notes.append(
            f"text-encoder output change over {weight.get('output_change_prompts')} specificity prompts: "
            f"max {_num(weight['output_change_max'], 3)}, mean {_num(weight.get('output_change_mean'), 3)} (relative)"
        )
    sections = [
        Section("Rates", blocks=[rates]),
        Section(
            "Weight change",
            notes=notes,
            blocks=[Table(["tensor", "‖ΔW‖/‖W‖", "rank"], weight_rows, numeric=(1,))],
        ),
    ]
    groups = [g for g in EVAL_GROUPS if any(it.get("group") == g for it in items)]
    groups += sorted({it.get("group") for it in items} - set(groups))
    for group in groups:
        section = Section(f"Group: {group}")
        grid = folder / f"grid-{group}.png"
        if grid.is_file():
            section.blocks.append(
                Figure(grid.read_bytes(), f"{group}: before / after (/ null control), first images of the group")
            )
        else:
            section.notes.append(
                f"this run saved no before/after images for {group} (no {grid.name}); "
                "the judge's observations below are what it stores"
            )
        section.blocks.append(_items_table(group, [it for it in items if it.get("group") == group]))
        sections.append(section)
    return Report(f"Edit evaluation · {pairs} · {config.get('model')}", "eval", str(folder), summary, sections)


def _items_table(group: str, items: list[dict]) -> Table:
    """One row per item of a group: prompt, seed, what the judge saw before / after, the outcome."""
    runs = [w for w in ("before", "after", "null") if any(w in it.get("observed", {}) for it in items)]
    rows = []
    for it in items:
        outcome = it.get("outcome", {}).get("after", {})
        verdict = "n/a" if not outcome.get("applicable", True) else ("yes" if outcome.get("success") else "no")
        rows.append(
            [it.get("prompt", ""), str(it.get("seed", ""))]
            + [_compact(it.get("observed", {}).get(w, "")) for w in runs]
            + [verdict]
        )
    metric = "removed" if group in ("efficacy", "generality") else "kept"
    return Table(
        ["prompt", "seed", *("observed " + w for w in runs), metric],
        rows,
        caption=f"{group}: {len(items)} item(s), the judge's observations",
        collapsed=len(rows) > 8,
    )


# ---------------------------------------------------------------- comparison runs

COMPARISON_COLUMNS = ("use", "method", "setting", "group", "rate", "lo", "hi", "n", "edit_s", "speedup", "drift")


def is_comparison_run(folder: Path) -> bool:
    """comparison.csv and a comparison.json manifest whose "kind" is "comparison"."""
    manifest = folder / "comparison.json"
    if not ((folder / "comparison.csv").is_file() and manifest.is_file()):
        return False
    try:
        return json.loads(manifest.read_text()).get("kind") == "comparison"
    except (json.JSONDecodeError, AttributeError):
        return False


def comparison_report(folder: Path) -> Report:
    """The method table (one row per use × method × setting; per group "rate [lo, hi]"; edit time,
    speed-up and drift) and every PNG of the folder."""
    manifest = _read_json(folder / "comparison.json")
    rows = _read_csv(folder / "comparison.csv")
    missing = [c for c in COMPARISON_COLUMNS if rows and c not in rows[0]]
    if missing or not rows:
        raise InvalidInputError(
            f"{str(folder / 'comparison.csv')!r} "
            + (f"lacks the column(s) {', '.join(missing)}" if missing else "has no rows")
            + f"; expected the columns {', '.join(COMPARISON_COLUMNS)}"
        )
    groups = list(dict.fromkeys(r["group"] for r in rows))
    keyed: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        keyed.setdefault((r["use"], r["method"], r["setting"]), []).append(r)

    def first(rs: list[dict], column: str) -> str:
        return next((r[column] for r in rs if r.get(column) not in ("", None)), "")

    def setting_label(setting: str, rs: list[dict]) -> str:
        """The setting, with the fine-tuning run behind it where the CSV says (lr_scale, train_steps,
        reached: columns of newer comparisons), e.g. "matched: lr ×10, 200 steps"."""
        lr, steps, reached = first(rs, "lr_scale"), first(rs, "train_steps"), first(rs, "reached")
        parts = [f"lr ×{float(lr):g}"] if lr else []
        parts += [f"{int(float(steps))} steps"] if steps else []
        parts += ["target not reached"] if reached == "False" else []
        return f"{setting}: {', '.join(parts)}" if parts else setting

    table_rows = []
    for (use, method, setting), rs in keyed.items():
        by_group = {r["group"]: r for r in rs}
        cells = [
            _interval(by_group[g]["rate"], by_group[g]["lo"], by_group[g]["hi"]) if g in by_group else "–"
            for g in groups
        ]
        seconds, speedup = first(rs, "edit_s"), first(rs, "speedup")
        table_rows.append(
            [
                use,
                method,
                setting_label(setting, rs),
                *cells,
                _seconds(seconds),
                _speedup(speedup),
                _num(first(rs, "drift"), 3),
            ]
        )
    n_fixed = 3 + len(groups)
    table = Table(
        ["use", "method", "setting", *groups, "edit s", "speed-up", "drift"],
        table_rows,
        caption="rate [95% interval] per group; edit time (s), speed-up over DIFF-QUICKFIX's, image-quality drift",
        numeric=tuple(range(3, n_fixed + 3)),
    )
    summary = [f"{k}: {_compact(v)}" for k, v in manifest.items() if k != "kind" and not isinstance(v, dict)] + [
        f"{len(keyed)} (use, method, setting) rows · groups: {', '.join(groups)}"
    ]
    sections = [Section("Methods", blocks=[table])]
    pngs = sorted(p for p in folder.rglob("*.png") if not any(s.startswith(".") for s in p.relative_to(folder).parts))
    plots = Section("Plots", blocks=[Figure(p.read_bytes(), str(p.relative_to(folder))) for p in pngs])
    if not pngs:
        plots.notes.append("the folder holds no PNG plots")
    sections.append(plots)
    return Report("Method comparison", "comparison", str(folder), summary, sections)


register_run_kind(
    RunKind(
        "comparison",
        "comparison.csv and comparison.json (kind 'comparison') from benchmarks/compare_methods.py --out",
        is_comparison_run,
        comparison_report,
    )
)
register_run_kind(
    RunKind(
        "eval",
        "results.csv, results.json and items.jsonl from `locedit eval --out`",
        is_eval_run,
        eval_report,
    )
)
register_run_kind(
    RunKind(
        "trace",
        "results.csv, baselines.csv and config.json from `locedit trace --out` (written when every cell is "
        "done: resume an unfinished run with `locedit trace ... --resume`)",
        is_trace_run,
        trace_report,
    )
)


def locogen_report(folder: Path) -> Report:
    """A LocoGen run: the window picked per attribute, the effect-per-window-start plot and every
    window's mean effect with its interval (report/locogen.py)."""
    import tempfile

    from locedit.report.locogen import draw_effect_plot, select_windows, window_stats

    config = _read_json(folder / "config.json")
    picks = select_windows(folder)
    pick_rows = [
        [
            attribute,
            str(p["window"]),
            str(p["start"]),
            ", ".join(p["layers"]),
            _interval(p["mean"], p["lo"], p["hi"]),
            str(p["n"]),
            "yes" if p["reached"] else f"no (best of all sizes; threshold {p['threshold']})",
        ]
        for attribute, p in sorted(picks.items())
    ]
    window_rows = [
        [attribute, str(m), str(j), layers, _interval(stat.mean, stat.lo, stat.hi), str(stat.n)]
        for attribute, cells in sorted(window_stats(folder).items())
        for (m, j), (stat, layers) in sorted(cells.items())
    ]
    with tempfile.TemporaryDirectory() as tmp:
        png = draw_effect_plot(folder, Path(tmp) / "locogen_effect.png").read_bytes()
    summary = [f"{k}: {_compact(v)}" for k, v in config.items() if k not in ("method", "cross_attention")]
    summary.append(f"{len(config.get('cross_attention', []))} cross-attention layers")
    sections = [
        Section(
            "Picked windows",
            notes=["effect = share of the clean → altered change a window reproduces; mean [95% t-interval], n pairs"],
            blocks=[
                Table(["attribute", "m", "start", "layers", "effect", "n", "reached"], pick_rows, numeric=(1, 2, 4, 5))
            ],
        ),
        Section("Effect per window start", blocks=[Figure(png, "mean effect per window start, one line per size m")]),
        Section(
            "Every window",
            blocks=[
                Table(
                    ["attribute", "m", "start", "layers", "effect", "n"],
                    window_rows,
                    caption=f"{len(window_rows)} windows",
                    numeric=(1, 2, 4, 5),
                    collapsed=True,
                )
            ],
        ),
    ]
    return Report("LocoGen: cross-attention windows", "locogen", str(folder), summary, sections)


def _is_locogen_run(folder: Path) -> bool:
    from locedit.report.locogen import is_locogen_run

    return is_locogen_run(folder)


register_run_kind(
    RunKind(
        "locogen",
        "results.csv and config.json (method 'locogen') from `locedit locogen --out`",
        _is_locogen_run,
        locogen_report,
    ),
    first=True,
)
