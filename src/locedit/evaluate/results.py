"""Files of an evaluation run: results.json, results.csv, items.jsonl, before/after grids, and the
summary table printed on stdout. The folder is written atomically (all or nothing); a run with
attacks (`RunParts`) is written part by part instead, so that an interrupted one resumes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from locedit.errors import InvalidInputError
from locedit.evaluate.attacks import AttackResult
from locedit.evaluate.edit_eval import EvalReport
from locedit.evaluate.suite import GROUPS, SPECIFICITY_GROUPS
from locedit.io import atomic_dir, atomic_path, write_json

CSV_COLUMNS = ("group", "metric", "k", "n", "rate", "lo", "hi", "null_k", "null_n", "null_rate", "null_lo", "null_hi")
# Added with attacks: the attack prompt's rate on the unedited model (does it draw the concept at all?).
ATTACK_COLUMNS = ("base_k", "base_n", "base_rate", "base_lo", "base_hi")
GRID_COLUMNS = 8  # images per group in the before/after grids


def results_json(report: EvalReport, config: dict, attacks: Sequence[AttackResult] = ()) -> dict:
    """What results.json holds: the run's settings, the rate rows (attack rows last), the weight change,
    counts and, with attacks, each attack's variants and cost."""
    spec = {"after": report.specificity("after")}
    if "null" in report.rates:
        spec["null"] = report.specificity("null")
    out = {
        "config": config,
        "rows": report.rows() + [a.row() for a in attacks],
        "specificity_min": spec,
        "weight": report.weight,
        "items": {
            g: sum(it.group == g for it in report.items) for g in GROUPS if any(it.group == g for it in report.items)
        },
    }
    if attacks:
        out["attacks"] = {a.kind: {"row": a.row(), "cost": a.cost} for a in attacks}
    return out


def write_files(report: EvalReport, folder: str | Path, config: dict, attacks: Sequence[AttackResult] = ()) -> None:
    """Write results.json, results.csv and items.jsonl into `folder` (each file atomically), and the grids
    when the report holds its images."""
    folder = Path(folder)
    write_json(folder / "results.json", results_json(report, config, attacks))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + (ATTACK_COLUMNS if attacks else ()), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(report.rows() + [a.row() for a in attacks])
    with atomic_path(folder / "results.csv") as tmp:
        tmp.write_text(buf.getvalue())
    lines = []
    for i, item in enumerate(report.items):
        record = {**item.to_json(), "observed": {w: obs[i] for w, obs in report.observations.items()}}
        record["outcome"] = {w: vars(out_[i]) for w, out_ in report.outcomes.items()}
        lines.append(json.dumps(record, sort_keys=True))
    for a in attacks:
        for i, attack in enumerate(a.items):
            record = {
                **attack.item.to_json(),
                "group": f"attack:{a.kind}",
                "source": attack.source,
                "variant": attack.variant,
                "how": attack.how,
                "observed": {w: obs[i] for w, obs in a.observations.items()},
                "shows_key": {w: flags[i] for w, flags in a.shows.items()},
            }
            lines.append(json.dumps(record, sort_keys=True))
    with atomic_path(folder / "items.jsonl") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if report.images.get("before") is not None:
        write_grids(report, folder)


def write_results(report: EvalReport, out: str | Path, config: dict, attacks: Sequence[AttackResult] = ()) -> Path:
    """Write the run into the folder `out` (must not exist or be empty), all at once; returns its path."""
    with atomic_dir(out) as tmp:
        write_files(report, tmp, config, attacks)
    return Path(out)


class RunParts:
    """A results folder written part by part (the evaluation, then each attack), so that a rerun with
    `resume` reuses the parts done: `<out>/parts/config.json` (what must match to resume) and
    `<out>/parts/<name>.json`, each written atomically once its part is complete.

    Args:
        out: the results folder: new or empty, or (with `resume`) one this run started.
        config: the run's settings that must be equal to resume it.
    """

    def __init__(self, out: str | Path, config: dict, resume: bool = False):
        self.out = Path(out)
        self.folder = self.out / "parts"
        stored = self.folder / "config.json"
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            if not resume:
                raise FileExistsError(
                    f"--out {str(out)!r} exists and is not empty; choose a new folder"
                    + (" or pass --resume to continue the run in it" if stored.is_file() else "")
                )
            if not stored.is_file():
                raise InvalidInputError(
                    f"--out {str(out)!r} holds no interrupted eval run with attacks (no parts/config.json); "
                    "choose a new folder"
                )
            old = json.loads(stored.read_text())
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if changed:
                raise InvalidInputError(
                    f"--resume: the run in {str(out)!r} was made with other settings ({', '.join(changed)}); "
                    "resume with the same options or choose a new folder"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(stored, config)

    def load(self, name: str) -> dict | None:
        """The part `name` if it is done, else None."""
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, name: str, obj: dict) -> None:
        write_json(self.folder / f"{name}.json", obj)


def write_grids(report: EvalReport, folder: Path) -> None:
    """grid-<group>.png in `folder`: up to GRID_COLUMNS prompts per group, before / after / null-control images."""
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
