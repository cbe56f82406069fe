"""DIFF-QUICKFIX against the fine-tuning baselines (ESD-x/-u, Concept Ablation kv/full), UCE and LocoEdit on a
built-in model: efficacy, generality and specificity on held-out suites, image drift, and edit time.

The paper's claim under test: DIFF-QUICKFIX edits "1000x faster than fine-tuning based editing
methods (Kumari et al., 2023; Gandikota et al., 2023a) with comparable or even better performance".

For each use (style = an artist, object = a shape, fact = an entity, colour) and method:
- "default": the method at its documented defaults (QuickFixConfig, UCESettings, ESDSettings,
  AblateSettings), judged on the `test` split of the built-in edit suite (every group, n prompts
  each, fixed seeds), with the null control (a random ΔW of the edit's norm on the same tensors).
- "matched": the fine-tuning methods at matched efficacy. One training run of the default length
  hands out snapshots at fractions of it (esd()/ablate() `snapshots`); each is judged on a *dev*
  suite (the dev split's phrasings, other seeds: efficacy and generality items only), and the first
  whose dev removal rate reaches DIFF-QUICKFIX's dev removal rate is judged on the test suite. The
  choice never sees the test suite. Closed-form methods have no such knob: their matched row is
  their default row.
- drift: KID (torchmetrics, polynomial kernel) between the unedited and the edited model's images of
  the specificity items (prompts that do not name the concept), in the feature space of the
  built-in classifier (its 128-d penultimate layer), with the null control's KID beside it.
- edit_s: wall time of the edit as the method's meta records it (fine-tuning: training incl.
  anchor generation; snapshots: time to that step); speedup = edit_s / DIFF-QUICKFIX's edit_s,
  DIFF-QUICKFIX timed cold (its in-memory moments cleared first; the disk cache of corpus moments as a
  user has it after the first edit of a model). A resumed run keeps the times stored in its cells, so
  a ratio may compare times from two processes: the machine's load then matters (the run's log says).

Writes OUT/comparison.csv (use, method, setting, group, rate, lo, hi, n, edit_s, speedup, drift,
drift_std, null_rate, null_lo, null_hi, null_drift), OUT/comparison.json (the settings; the
numbers are the CSV), OUT/cells/*.json (one per judged cell: a killed run resumes from them) and PNG plots.

    python benchmarks/compare_methods.py --out runs/compare                      # everything (hours on a CPU)
    python benchmarks/compare_methods.py --out runs/compare --uses style,fact --n 40
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


# Learning rate of the fine-tuning methods = their default × this (--ft-lr-scale: the paper's rates are
# for SD's 860M-parameter UNet; a small model may need larger ones).
LR_SCALE = [1.0]


def run_method(pipe, method: str, key: str, value: str, scale: float, snapshots: list[int] | None, on_snapshot):
    """The method's default edit (steps × scale for the fine-tuning ones); snapshots go to on_snapshot."""
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
        return esd(pipe, key, method[-1], steps=steps, lr=ESDSettings().lr * LR_SCALE[0], progress=True, **kw)
    steps = max(1, round(AblateSettings().steps * scale))
    variant = "full" if method == "ablate-full" else "kv"
    return ablate(pipe, key, value, variant, steps=steps, lr=AblateSettings().lr * LR_SCALE[0], progress=True, **kw)


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


def cell_rows(use: str, method: str, setting: str, report: EvalReport, edit_s: float, drift, null_drift) -> list[dict]:
    rows = []
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
                "edit_s": edit_s,
                "speedup": None,
                "drift": drift[0],
                "drift_std": drift[1],
                "null_rate": row.get("null_rate"),
                "null_lo": row.get("null_lo"),
                "null_hi": row.get("null_hi"),
                "null_drift": null_drift[0] if null_drift else None,
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
    spec = [i for i, it in enumerate(test) if it.group in SPECIFICITY_GROUPS]

    def cell_file(method: str, setting: str) -> Path:
        return out / "cells" / f"{use}__{method}__{setting}.json"

    # a resumed run's speed-ups use the DIFF-QUICKFIX time stored with its cells, so that is the one to print
    timing = f"DIFF-QUICKFIX {qf.meta['seconds']:.3f} s"
    if cell_file("quickfix", "default").exists():
        stored = json.loads(cell_file("quickfix", "default").read_text())["rows"][0]["edit_s"]
        timing = f"DIFF-QUICKFIX {stored:.3f} s (stored with the cells; this process's run {qf.meta['seconds']:.3f} s)"
    print(f"\n## {use}: {key!r} -> {value!r}; {timing}, dev removal {target:.2f}")

    def judge_cell(method: str, setting: str, edit, report: EvalReport | None = None) -> list[dict]:
        """Judge `edit` on the test suite (or take the stored cell), add its rows, return them."""
        cell = cell_file(method, setting)
        if cell.exists():
            found = json.loads(cell.read_text())["rows"]
            rows.extend(found)
            return found
        leaked = overlap(test, edit.meta.get("fit_captions", ()))
        if leaked:
            raise SystemExit(f"{method}: test prompts {leaked[:3]} are fit captions; the suite must be held out")
        if report is None:
            report = evaluate_edit(pipe, edit, test, judge, settings, baseline=qf_report)
        b = report.images["before"][spec]
        drift = kid(features, b, report.images["after"][spec])
        null_drift = kid(features, b, report.images["null"][spec]) if "null" in report.images else None
        found = cell_rows(use, method, setting, report, edit.meta["seconds"], drift, null_drift)
        write_json(cell, {"rows": found, "meta": {k: v for k, v in edit.meta.items() if k != "stats"}})
        rows.extend(found)
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

    for method in methods:
        if method == "quickfix":
            judge_cell(method, "default", qf, qf_report)
            continue
        if method in ("uce", "locoedit"):  # closed forms: no step count to match efficacy with
            judge_cell(method, "default", run_method(pipe, method, key, value, 1.0, None, None))
            continue
        settings_wanted = ("default",) if args.no_matched else ("default", "matched")
        if all(cell_file(method, s).exists() for s in settings_wanted):
            for s in settings_wanted:
                judge_cell(method, s, None)
            continue
        total = default_steps(method, args.steps_scale)
        points = sorted({max(1, round(total * f)) for f in SNAPSHOT_FRACTIONS} - {total})
        sweep: list = []
        t0 = time.perf_counter()
        edit = run_method(
            pipe,
            method,
            key,
            value,
            args.steps_scale,
            None if args.no_matched else points,
            lambda k, snap, sweep=sweep: sweep.append((k, snap)),
        )
        print(f"  {method}: trained {total} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        default_rows = judge_cell(method, "default", edit)
        if args.no_matched:
            continue
        sweep_log, matched = [], None
        for k, snap in [*sweep, (total, edit)]:
            dev_report = evaluate_edit(
                pipe, snap, dev, judge, EvalSettings(steps=args.steps, null=False), baseline=before_dev
            )
            sweep_log.append({"steps": k, "dev_removal": removal(dev_report), "edit_s": snap.meta["seconds"]})
            if sweep_log[-1]["dev_removal"] >= target:
                matched = (k, snap)
                break
        write_json(cell_file(method, "sweep"), {"target": target, "sweep": sweep_log, "reached": bool(matched)})
        print(f"  {method}: dev removal by steps {[(s['steps'], round(s['dev_removal'], 2)) for s in sweep_log]}")
        if matched is None or matched[0] == total:  # the default run is the matched one (or the closest)
            same = [{**r, "setting": "matched"} for r in default_rows]
            write_json(cell_file(method, "matched"), {"rows": same, "meta": {"same_as": "default"}})
            rows.extend(same)
        else:
            judge_cell(method, "matched", matched[1])
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
        "--ft-lr-scale", type=float, default=1.0, help="learning rate of the fine-tuning methods × this"
    )
    parser.add_argument("--no-matched", action="store_true", help="skip the matched-efficacy sweep")
    args = parser.parse_args()
    LR_SCALE[0] = args.ft_lr_scale
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
        "ft_lr_scale": args.ft_lr_scale,
        "uses": {u: list(USES[u]) for u in uses},
        "methods": methods,
        "locoedit_layers": LOCO_LAYERS or "every cross-attention layer",
        "matched_rule": "first snapshot whose dev-suite removal rate >= DIFF-QUICKFIX's (dev split, other seeds)",
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
                fmt="o" if setting == "default" else "s",
                capsize=2,
                label=f"{method} ({setting})",
            )
        ax.set(title=use, xlabel="efficacy (removed)", ylabel="worst specificity group (kept)", xlim=(-0.05, 1.05))
        ax.set_ylim(-0.05, 1.05)
    axes[0][-1].legend(fontsize=6, loc="lower left")
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
