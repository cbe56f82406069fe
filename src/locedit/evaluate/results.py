"""Files of an evaluation run: results.json, results.csv, items.jsonl, before/after grids, and the
summary table printed on stdout. The folder is written atomically (all or nothing)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from locedit.evaluate.edit_eval import EvalReport
from locedit.evaluate.suite import GROUPS, SPECIFICITY_GROUPS
from locedit.io import atomic_dir

CSV_COLUMNS = ("group", "metric", "k", "n", "rate", "lo", "hi", "null_k", "null_n", "null_rate", "null_lo", "null_hi")
GRID_COLUMNS = 8  # images per group in the before/after grids


def results_json(report: EvalReport, config: dict) -> dict:
    """What results.json holds: the run's settings, the rate rows, the weight change and counts."""
    spec = {"after": report.specificity("after")}
    if "null" in report.rates:
        spec["null"] = report.specificity("null")
    return {
        "config": config,
        "rows": report.rows(),
        "specificity_min": spec,
        "weight": report.weight,
        "items": {
            g: sum(it.group == g for it in report.items) for g in GROUPS if any(it.group == g for it in report.items)
        },
    }


def write_results(report: EvalReport, out: str | Path, config: dict) -> Path:
    """Write the run into the folder `out` (must not exist or be empty); returns its path."""
    with atomic_dir(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results_json(report, config), indent=2, sort_keys=True) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report.rows())
        (tmp / "results.csv").write_text(buf.getvalue())
        lines = []
        for i, item in enumerate(report.items):
            record = {**item.to_json(), "observed": {w: obs[i] for w, obs in report.observations.items()}}
            record["outcome"] = {w: vars(out_[i]) for w, out_ in report.outcomes.items()}
            lines.append(json.dumps(record, sort_keys=True))
        (tmp / "items.jsonl").write_text("\n".join(lines) + "\n")
        if report.images.get("before") is not None:
            _grids(report, tmp)
    return Path(out)


def _grids(report: EvalReport, folder: Path) -> None:
    from locedit.report.grids import save_grid

    runs = [w for w in ("before", "after", "null") if report.images.get(w) is not None]
    for group in GROUPS:
        idx = [i for i, it in enumerate(report.items) if it.group == group][:GRID_COLUMNS]
        if not idx:
            continue
        save_grid(
            [report.images[w][idx] for w in runs],
            folder / f"grid-{group}.png",
            row_labels=["null control" if w == "null" else w for w in runs],
            col_labels=[report.items[i].prompt for i in idx],
            title=group,
        )


def summary_table(report: EvalReport) -> str:
    """The rates as a plain-text table: group, metric, n, rate [95% interval], null control."""
    has_null = "null" in report.rates
    head = f"{'group':12s} {'metric':12s} {'n':>4s}  {'rate':>5s} [95% CI]    " + ("null control" if has_null else "")
    lines = [head, "-" * len(head)]
    for row in report.rows():
        rate = "  -  " if row["rate"] is None else f"{row['rate']:5.2f}"
        line = f"{row['group']:12s} {row['metric']:12s} {row['n']:4d}  {rate} [{row['lo']:.2f}, {row['hi']:.2f}]"
        if has_null and "null_n" in row:
            null = "  -  " if row["null_rate"] is None else f"{row['null_rate']:5.2f}"
            line += f"  {null} [{row['null_lo']:.2f}, {row['null_hi']:.2f}]"
        lines.append(line)
    spec = report.specificity("after")
    groups = ", ".join(g for g in SPECIFICITY_GROUPS if any(it.group == g for it in report.items))
    lines.append(f"specificity (lowest of {groups}): {spec:.2f}")
    for name, w in report.weight["tensors"].items():
        lines.append(f"weight change {name}: ||ΔW||/||W|| = {w['rel_norm']:.3f}, rank {w['rank']} of {min(w['shape'])}")
    if "output_change_max" in report.weight:
        lines.append(
            f"text-encoder output change over {report.weight['output_change_prompts']} specificity prompts: "
            f"max {report.weight['output_change_max']:.3f}, mean {report.weight['output_change_mean']:.3f} (relative)"
        )
    return "\n".join(lines)
