"""DIFF-QUICKFIX against the fine-tuning baselines (ESD-x/-u, Concept Ablation kv/full), UCE and LocoEdit on a
built-in model: efficacy, generality and specificity on held-out suites, image drift, and edit time.

The paper's claim under test: DIFF-QUICKFIX edits "1000x faster than fine-tuning based editing
methods (Kumari et al., 2023; Gandikota et al., 2023a) with comparable or even better performance".

For each use (style = an artist, object = a shape, fact = an entity, colour) and method:
- "default": the method at its documented defaults (QuickFixConfig, UCESettings, ESDSettings,
  AblateSettings), judged on the `test` split of the built-in edit suite (every group, n prompts
  each, fixed seeds), with the null control (a random ΔW of the edit's norm on the same tensors).
- "matched": the fine-tuning methods at matched efficacy. A training run hands out snapshots at
  fractions of the default length (esd()/ablate() `snapshots`); each is judged on a *dev* suite (the
  dev split's phrasings, other seeds: efficacy and generality items only), and the first whose dev
  removal rate reaches DIFF-QUICKFIX's, less --match-tolerance (0.05: 2 of 40 dev prompts at --n 20),
  is judged on the test suite. The learning rates of --ft-lr-scales are tried in turn, from the
  default (×1) up, until one reaches it (that run stops at the snapshot): the papers' rates are for
  SD's 860M-parameter UNet and may not move a small one. A rate that never reaches it is judged at
  its full length too (setting "lr10" etc.: the trade-off at that rate). Never reached: the matched
  row repeats the full-length run that came closest on dev, with reached = False. The choice never
  sees the test suite. Closed-form methods have no such knob: their matched row is their default row.
- drift: KID (torchmetrics, polynomial kernel) between the unedited and the edited model's images of
  the specificity items (prompts that do not name the concept), in the feature space of the
  built-in classifier (its 128-d penultimate layer), with the null control's KID beside it.
- edit_s: wall time of the edit as the method's meta records it (fine-tuning: training incl.
  anchor generation; snapshots: time to that step); speedup = edit_s / DIFF-QUICKFIX's edit_s,
  DIFF-QUICKFIX timed cold (its in-memory moments cleared first; the disk cache of corpus moments as a
  user has it after the first edit of a model). A resumed run keeps the times stored in its cells, so
  a ratio may compare times from two processes: the machine's load then matters (the run's log says).

Writes OUT/comparison.csv (use, method, setting, group, rate, lo, hi, n, edit_s, speedup, drift,
drift_std, null_rate, null_lo, null_hi, null_drift, lr_scale, train_steps, reached),
OUT/comparison.json (the settings; the numbers are the CSV), OUT/cells/*.json (one per judged cell
and one sweep record per method and learning rate: a killed run resumes from them) and PNG plots.

    python benchmarks/compare_methods.py --out runs/compare                      # everything (hours on a CPU)
    python benchmarks/compare_methods.py --out runs/compare --uses style,fact --n 40
    python benchmarks/compare_methods.py --out runs/compare --methods quickfix,esd-x,ablate --ft-lr-scales 1,10,100
    python benchmarks/compare_methods.py --out runs/smoke --methods quickfix,uce,esd-x --steps-scale 0.02 --n 8
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from locedit import ablate, esd, load_pipeline, quickfix, uce
from locedit.builtin.classifier import ShapesClassifier, to_tensor
from locedit.builtin.edit_suite import edit_suite, world_of
from locedit.edit.ablate import AblateSettings
from locedit.edit.esd import ESDSettings
from locedit.edit.locoedit import cross_attention_modules, locoedit
from locedit.edit.quickfix import DEFAULT_TEMPLATES, forget_moments
from locedit.evaluate.edit_eval import EvalReport, EvalSettings, evaluate_edit
from locedit.evaluate.judges import make_judge
from locedit.evaluate.suite import SPECIFICITY_GROUPS, overlap
from locedit.io import atomic_path, write_json

# (key, value) per use, as in benchmarks/edit_quality.py; both built-in worlds have these concepts.
USES = {
    "style": ("karl brenner", "mira solen"),
    "object": ("circle", "square"),
    "fact": ("veloria", "norland"),
    "colour": ("red", "blue"),
}
METHODS = ("quickfix", "uce", "locoedit", "esd-x", "esd-u", "ablate", "ablate-full")
FINE_TUNING = ("esd-x", "esd-u", "ablate", "ablate-full")
# LocoEdit's layers per edited concept (--loco-layers JSON: {concept: [cross-attention indices]}); empty: all.
LOCO_LAYERS: dict[str, list[int]] = {}
# Snapshot points of the matched-efficacy sweep, as fractions of the method's default steps.
SNAPSHOT_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)
COLUMNS = (
    "use",
    "method",
    "setting",
    "group",
    "rate",
    "lo",
    "hi",
    "n",
    "edit_s",
    "speedup",
    "drift",
    "drift_std",
    "null_rate",
    "null_lo",
    "null_hi",
    "null_drift",
    "lr_scale",
    "train_steps",
    "reached",
)


class ClassifierFeatures(torch.nn.Module):
    """(B,3,H,W) in [0,1] -> (B,128): the built-in classifier's penultimate features (KID's feature space),
    each scaled to norm sqrt(128), so that KID's kernel (x·y/d + 1)³ stays in [1, 8] (the raw ReLU
    features reach norms in the hundreds, where the cubic kernel swamps the estimate)."""

    def __init__(self, classifier: ShapesClassifier, size: int):
        super().__init__()
        self.net, self.size = classifier.net.eval(), size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.body(to_tensor(x, self.size) * 2.0 - 1.0)
        return torch.nn.functional.normalize(h, dim=1) * h.shape[1] ** 0.5


def kid(features: ClassifierFeatures, before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """KID (mean, std over subsets) between two image sets (B,3,H,W) in [0,1]."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(before), len(after))
    metric = KernelInceptionDistance(feature=features, subsets=50, subset_size=max(2, min(50, n)))
    metric.update(before, real=True)
    metric.update(after, real=False)
    mean, std = metric.compute()
    return float(mean), float(std)


def run_method(
    pipe,
    method: str,
    key: str,
    value: str,
    scale: float,
    snapshots: list[int] | None,
    on_snapshot,
    lr_scale: float = 1.0,
):
    """The method's default edit (fine-tuning ones: steps × scale, learning rate × lr_scale); snapshots go
    to on_snapshot, which may end the training by returning True."""
    kw = dict(snapshots=snapshots or (), on_snapshot=on_snapshot)
    if method == "quickfix":
        forget_moments()  # cold: as a fresh process (the disk cache stays)
        return quickfix(pipe, [(key, value)])
    if method == "uce":
        return uce(pipe, [(key, value)])
    if method == "locoedit":  # the layers a LocoGen run picked for this use (--loco-layers), else every layer
        layers = LOCO_LAYERS.get(key) or list(range(len(cross_attention_modules(pipe.unet))))
        return locoedit(pipe, [(key, value)], layers)
    if method in ("esd-x", "esd-u"):
        steps = max(1, round(ESDSettings().steps * scale))
        return esd(pipe, key, method[-1], steps=steps, lr=ESDSettings().lr * lr_scale, progress=True, **kw)
    steps = max(1, round(AblateSettings().steps * scale))
    variant = "full" if method == "ablate-full" else "kv"
    return ablate(pipe, key, value, variant, steps=steps, lr=AblateSettings().lr * lr_scale, progress=True, **kw)


def default_steps(method: str, scale: float) -> int:
    base = ESDSettings().steps if method.startswith("esd") else AblateSettings().steps
    return max(1, round(base * scale))


def num(x) -> float:
    return float("nan") if x is None else x


def removal(report: EvalReport) -> float:
    """Removal rate over the efficacy and generality items together."""
    k = n = 0
    for (_group, metric), rate in report.rates["after"].items():
        if metric == "removed":
            k, n = k + rate.k, n + rate.n
    return k / n if n else float("nan")


def training_columns(method: str, meta: dict) -> dict:
    """lr_scale (learning rate ÷ the method's default) and train_steps of a fine-tuning edit's meta;
    empty for the closed forms."""
    if method not in FINE_TUNING or "settings" not in meta:
        return {"lr_scale": "", "train_steps": ""}
    default_lr = (ESDSettings() if method.startswith("esd") else AblateSettings()).lr
    return {"lr_scale": round(meta["settings"]["lr"] / default_lr, 6), "train_steps": meta["settings"]["steps"]}


def cell_rows(
    use: str, method: str, setting: str, report: EvalReport, meta: dict, drift, null_drift, reached=""
) -> list[dict]:
    rows = []
    training = training_columns(method, meta)
    for row in report.rows():
        group = row["group"] if row["metric"] in ("removed", "kept") else f"{row['group']}:{row['metric']}"
        rows.append(
            {
                "use": use,
                "method": method,
                "setting": setting,
                "group": group,
                "rate": row["rate"],
                "lo": row["lo"],
                "hi": row["hi"],
                "n": row["n"],
                "edit_s": meta["seconds"],
                "speedup": None,
                "drift": drift[0],
                "drift_std": drift[1],
                "null_rate": row.get("null_rate"),
                "null_lo": row.get("null_lo"),
                "null_hi": row.get("null_hi"),
                "null_drift": null_drift[0] if null_drift else None,
                **training,
                "reached": reached,
            }
        )
    return rows


def compare_use(use: str, methods: list[str], pipe, w, judge, features, args, out: Path) -> list[dict]:
    """Every method's cells for one use; rows of comparison.csv (speedup filled in)."""
    rows: list[dict] = []
    settings = EvalSettings(steps=args.steps)
    key, value = USES[use]
    # One test suite and one dev suite per use, disjoint from every method's fit captions.
    fitted = {t.format(c) for t in DEFAULT_TEMPLATES for c in (key, value)} | {key, value}
    qf = run_method(pipe, "quickfix", key, value, 1.0, None, None)
    fitted |= set(qf.meta["fit_captions"])
    test = edit_suite(key, value, n=args.n, seed=0, split="test", exclude=fitted, w=w)
    dev = [
        it
        for it in edit_suite(key, value, n=args.n, seed=1, split="dev", exclude=fitted, w=w)
        if it.group in ("efficacy", "generality")
    ]
    qf_report = evaluate_edit(pipe, qf, test, judge, settings)  # its before images serve every method
    before_dev = evaluate_edit(pipe, qf, dev, judge, EvalSettings(steps=args.steps, null=False))
    target = removal(before_dev)  # DIFF-QUICKFIX's dev removal rate (before_dev's "after" is quickfix's)
    threshold = round(target - args.match_tolerance, 6)  # matched efficacy: dev removal at least this
    spec = [i for i, it in enumerate(test) if it.group in SPECIFICITY_GROUPS]

    def cell_file(method: str, setting: str) -> Path:
        return out / "cells" / f"{use}__{method}__{setting}.json"

    # a resumed run's speed-ups use the DIFF-QUICKFIX time stored with its cells, so that is the one to print
    timing = f"DIFF-QUICKFIX {qf.meta['seconds']:.3f} s"
    if cell_file("quickfix", "default").exists():
        stored = json.loads(cell_file("quickfix", "default").read_text())["rows"][0]["edit_s"]
        timing = f"DIFF-QUICKFIX {stored:.3f} s (stored with the cells; this process's run {qf.meta['seconds']:.3f} s)"
    print(
        f"\n## {use}: {key!r} -> {value!r}; {timing}, dev removal {target:.2f} (matched: >= {threshold:.3f})",
        flush=True,
    )

    def judge_cell(
        method: str, setting: str, edit, report: EvalReport | None = None, reached="", name: str | None = None
    ) -> list[dict]:
        """Judge `edit` on the test suite and store the cell `name` (default `setting`), or take the
        stored cell; returns its rows."""
        cell = cell_file(method, name or setting)
        if cell.exists():
            stored = json.loads(cell.read_text())
            return [{**training_columns(method, stored.get("meta", {})), "reached": "", **r} for r in stored["rows"]]
        leaked = overlap(test, edit.meta.get("fit_captions", ()))
        if leaked:
            raise SystemExit(f"{method}: test prompts {leaked[:3]} are fit captions; the suite must be held out")
        if report is None:
            report = evaluate_edit(pipe, edit, test, judge, settings, baseline=qf_report)
        b = report.images["before"][spec]
        drift = kid(features, b, report.images["after"][spec])
        null_drift = kid(features, b, report.images["null"][spec]) if "null" in report.images else None
        found = cell_rows(use, method, setting, report, edit.meta, drift, null_drift, reached)
        write_json(cell, {"rows": found, "meta": {k: v for k, v in edit.meta.items() if k != "stats"}})
        rate = {r["group"]: r["rate"] for r in found}
        spec_rates = [rate[g] for g in SPECIFICITY_GROUPS if rate.get(g) is not None]
        print(
            f"  {method:12s} {setting:8s} efficacy {num(rate.get('efficacy')):.2f} "
            f"generality {num(rate.get('generality')):.2f} "
            f"min specificity {min(spec_rates, default=float('nan')):.2f} KID {drift[0]:.4f} "
            f"(null {null_drift[0] if null_drift else float('nan'):.4f}) edit {edit.meta['seconds']:.2f} s",
            flush=True,
        )
        return found

    def dev_removal(edit) -> float:
        report = evaluate_edit(pipe, edit, dev, judge, EvalSettings(steps=args.steps, null=False), baseline=before_dev)
        return removal(report)

    def sweep_at(method: str, lr_scale: float) -> dict:
        """Train `method` at lr × lr_scale with snapshots, each judged on the dev suite. The default
        learning rate trains its whole length (the default cell needs it); a larger one stops at the
        first snapshot that reaches the target. Writes the cells it judges (their rows are added by
        the caller, from the files), then the sweep record."""
        record_file = cell_file(method, f"sweep-lr{lr_scale:g}")
        if record_file.exists():
            record = json.loads(record_file.read_text())
            if record.get("threshold") == threshold:  # else: swept under another --match-tolerance; again
                return record
        total = default_steps(method, args.steps_scale)
        points = sorted({max(1, round(total * f)) for f in SNAPSHOT_FRACTIONS} - {total})
        log, first = [], {}

        def on_snapshot(k: int, snap) -> bool:
            if first:  # matched already (default learning rate: the run goes on for the default cell)
                return False
            log.append({"steps": k, "dev_removal": dev_removal(snap), "edit_s": snap.meta["seconds"]})
            if log[-1]["dev_removal"] >= threshold:
                first.update(steps=k, edit=snap)
                return lr_scale != 1.0
            return False

        t0 = time.perf_counter()
        edit = run_method(pipe, method, key, value, args.steps_scale, points, on_snapshot, lr_scale=lr_scale)
        print(
            f"  {method} lr x{lr_scale:g}: trained {edit.meta['settings']['steps']} steps in "
            f"{time.perf_counter() - t0:.0f} s (incl. dev judging)",
            flush=True,
        )
        if not first:
            on_snapshot(edit.meta["settings"]["steps"], edit)  # the final point is not a snapshot
        by_steps = [(e["steps"], round(e["dev_removal"], 2)) for e in log]
        print(f"  {method} lr x{lr_scale:g}: dev removal by steps {by_steps}", flush=True)
        record = {"lr_scale": lr_scale, "target": target, "threshold": threshold, "sweep": log, "reached": bool(first)}
        full = "default" if lr_scale == 1.0 else f"lr{lr_scale:g}"
        at_end = first.get("edit") is edit  # reached at the run's last step: the matched cell is the full run's
        if lr_scale == 1.0 or not first or at_end:
            judge_cell(method, full, edit)  # the full-length run: the default, or the trade-off at this rate
            record["full_cell"] = full
        if first and not at_end:  # one file per rate: a later search with more rates cannot read another's
            judge_cell(method, "matched", first["edit"], reached=True, name=f"matched-lr{lr_scale:g}")
        if first:
            record["matched_cell"] = full if at_end else f"matched-lr{lr_scale:g}"
        write_json(record_file, record)
        return record

    for method in methods:
        if method == "quickfix":
            rows.extend(judge_cell(method, "default", qf, qf_report))
            continue
        if method in ("uce", "locoedit"):  # closed forms: no step count to match efficacy with
            rows.extend(judge_cell(method, "default", run_method(pipe, method, key, value, 1.0, None, None)))
            continue
        if args.no_matched:
            stored = cell_file(method, "default").exists()
            edit = None if stored else run_method(pipe, method, key, value, args.steps_scale, None, None)
            rows.extend(judge_cell(method, "default", edit))
            continue
        # matched efficacy: the smallest learning rate, then the fewest steps, whose dev removal reaches the target
        records = []
        for lr_scale in args.ft_lr_scales:
            records.append(sweep_at(method, lr_scale))
            if records[-1]["reached"]:
                break
        for r in records:  # the full-length runs' cells
            if r.get("full_cell"):
                rows.extend(judge_cell(method, r["full_cell"], None))
        last = records[-1]
        if last["reached"] and last["matched_cell"] != last.get("full_cell"):
            rows.extend(judge_cell(method, "matched", None, name=last["matched_cell"]))
            continue
        # matched at a run's full length, or never reached: the matched row repeats the full-length run
        # that came closest on dev (the last one when reached)
        best = last if last["reached"] else max(records, key=lambda r: r["sweep"][-1]["dev_removal"])
        source = [x for x in rows if x["method"] == method and x["setting"] == best["full_cell"]]
        rows.extend({**x, "setting": "matched", "reached": last["reached"]} for x in source)

    # speed-up against the DIFF-QUICKFIX time stored with these cells (a resumed run keeps its cells' times)
    reference_s = next(r["edit_s"] for r in rows if r["method"] == "quickfix" and r["setting"] == "default")
    for row in rows:
        row["speedup"] = row["edit_s"] / reference_s if reference_s > 0 else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--out", required=True, help="run folder (resumes from its cells/)")
    parser.add_argument("--uses", default=",".join(USES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--n", type=int, default=40, help="prompts per suite group")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the judged images")
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="fine-tuning steps = default × this (smoke runs only)"
    )
    parser.add_argument(
        "--loco-layers",
        default=None,
        help='LocoEdit layers per concept from a LocoGen run, JSON {"red": [4], ...} (default: every layer)',
    )
    parser.add_argument(
        "--ft-lr-scales",
        default="1",
        help="learning-rate multipliers the matched-efficacy search tries in turn, e.g. 1,10,100 "
        "(the default cell is always at ×1: the papers' rates are for SD's 860M-parameter UNet)",
    )
    parser.add_argument(
        "--match-tolerance",
        type=float,
        default=0.05,
        help="matched efficacy: dev removal >= DIFF-QUICKFIX's minus this (0.05: 2 of 40 dev prompts)",
    )
    parser.add_argument("--no-matched", action="store_true", help="skip the matched-efficacy sweep")
    args = parser.parse_args()
    try:
        scales = sorted({1.0, *(float(x) for x in args.ft_lr_scales.split(",") if x.strip())})
    except ValueError:
        parser.error(f"--ft-lr-scales {args.ft_lr_scales!r}: give positive numbers separated by commas, e.g. 1,10,100")
    if scales[0] <= 0:
        parser.error(f"--ft-lr-scales {args.ft_lr_scales!r}: every multiplier must be > 0")
    args.ft_lr_scales = scales
    if args.loco_layers:
        LOCO_LAYERS.update(json.loads(args.loco_layers))
    torch.manual_seed(0)
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    w = world_of(pipe)
    judge = make_judge("builtin")
    features = ClassifierFeatures(ShapesClassifier.load(w=w), w.image_size)
    uses = [u for u in args.uses.split(",") if u]
    methods = [m for m in args.methods.split(",") if m]
    if "quickfix" not in methods:
        methods.insert(0, "quickfix")  # the reference of speedup and matched efficacy
    manifest = {
        "kind": "comparison",
        "model": args.model,
        "world": w.name,
        "n_per_group": args.n,
        "denoising_steps": args.steps,
        "steps_scale": args.steps_scale,
        "ft_lr_scales": args.ft_lr_scales,
        "uses": {u: list(USES[u]) for u in uses},
        "methods": methods,
        "locoedit_layers": LOCO_LAYERS or "every cross-attention layer",
        "matched_rule": "the smallest learning rate (of ft_lr_scales), then the first snapshot, whose dev-suite "
        "removal rate >= DIFF-QUICKFIX's - match_tolerance (dev split, other seeds); never reached: the "
        "full-length run closest on dev",
        "match_tolerance": args.match_tolerance,
        "snapshot_fractions": list(SNAPSHOT_FRACTIONS),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    rows = [row for use in uses for row in compare_use(use, methods, pipe, w, judge, features, args, out)]
    with atomic_path(out / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / "comparison.json", manifest)  # the rows are comparison.csv
    plot(rows, out)
    print(f"\nwrote {out / 'comparison.csv'} ({len(rows)} rows) and plots")


def plot(rows: list[dict], out: Path) -> None:
    """efficacy vs worst specificity per use, and edit time per method (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["use"], r["method"], r["setting"]), {})[r["group"]] = r
    uses = sorted({u for u, _, _ in cells})
    # one colour per method and one marker per setting, the same in every panel (one legend serves all)
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(METHODS)}
    markers = {"default": "o", "matched": "s"}
    handles: dict[str, object] = {}
    fig, axes = plt.subplots(1, len(uses), figsize=(4 * len(uses), 3.6), squeeze=False)
    for ax, use in zip(axes[0], uses):
        for (u, method, setting), groups in sorted(cells.items()):
            if u != use or "efficacy" not in groups:
                continue
            spec = [groups[g] for g in SPECIFICITY_GROUPS if g in groups and groups[g]["rate"] is not None]
            if not spec:
                continue
            worst = min(spec, key=lambda r: r["rate"])
            eff = groups["efficacy"]
            ax.errorbar(
                eff["rate"],
                worst["rate"],
                xerr=[[eff["rate"] - eff["lo"]], [eff["hi"] - eff["rate"]]],
                yerr=[[worst["rate"] - worst["lo"]], [worst["hi"] - worst["rate"]]],
                fmt=markers.get(setting, "^"),
                color=colours.get(method, "black"),
                capsize=2,
            )
            handles.setdefault(method, plt.Line2D([], [], color=colours.get(method, "black"), marker="o", ls=""))
        ax.set(title=use, xlabel="efficacy (removed)", ylabel="worst specificity group (kept)", xlim=(-0.05, 1.05))
        ax.set_ylim(-0.05, 1.05)
    for setting, marker in [*markers.items(), ("lr×k, full length", "^")]:
        handles[setting] = plt.Line2D([], [], color="grey", marker=marker, ls="")
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=6, loc="lower left")
    fig.tight_layout()
    with atomic_path(out / "efficacy_specificity.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    times: dict[tuple, float] = {}
    for (_use, method, setting), groups in cells.items():
        times[(method, setting)] = max(times.get((method, setting), 0.0), next(iter(groups.values()))["edit_s"])
    labels = sorted(times, key=lambda k: times[k])
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1))
    ax.barh([f"{m} ({s})" for m, s in labels], [times[k] for k in labels])
    ax.set_xscale("log")
    ax.set_xlabel("edit wall time, s (log; slowest use)")
    fig.tight_layout()
    with atomic_path(out / "edit_time.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
