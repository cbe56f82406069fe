"""The efficacy–specificity trade-off of DIFF-QUICKFIX on the built-in shapes model: one edit
evaluated at several corpus weights μ (and both edited projections), on the held-out `test`
suite, judged image by image; prints the points and plots them (README figure).

    python benchmarks/edit_tradeoff.py [--edits style,colour] [--mu 1,3,10,30,100,300,1000] [--n 30] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from locedit import load_pipeline, quickfix
from locedit.builtin.edit_suite import edit_suite
from locedit.evaluate.edit_eval import EvalSettings, evaluate_edit, weight_change
from locedit.evaluate.judges import make_judge

EDITS = {
    "style": ("striped", "plain"),
    "artist": ("karl brenner", "mira solen"),
    "colour": ("red", "blue"),
    "shape": ("circle", "square"),
    "fact": ("veloria", "norland"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", default="style,colour")
    parser.add_argument("--mu", default="1,3,10,30,100,300,1000")
    parser.add_argument("--modules", default="attn_v", help="comma-separated: attn_v, attn_out")
    parser.add_argument("--n", type=int, default=30, help="prompts per group")
    parser.add_argument("--plot", default=None, help="write the figure here (PNG)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    pipe = load_pipeline("builtin:shapes")
    judge = make_judge("builtin")
    points = []
    for edit_name in args.edits.split(","):
        key, value = EDITS[edit_name]
        baseline = None
        for module in args.modules.split(","):
            for mu in [float(m) for m in args.mu.split(",")]:
                edit = quickfix(pipe, [(key, value)], module=module, corpus_weight=mu)
                items = edit_suite(key, value, n=args.n, seed=0, split="test", exclude=edit.meta["fit_captions"])
                if baseline is not None and [(i.prompt, i.seed) for i in baseline.items] != [
                    (i.prompt, i.seed) for i in items
                ]:
                    baseline = None
                t0 = time.perf_counter()
                result = evaluate_edit(pipe, edit, items, judge, EvalSettings(null=False), baseline=baseline)
                baseline = baseline or result
                rates = result.rates["after"]
                point = {
                    "edit": edit_name,
                    "module": module,
                    "mu": mu,
                    "efficacy": rates[("efficacy", "removed")].rate,
                    "generality": rates[("generality", "removed")].rate,
                    "specificity": result.specificity(),
                    "rel_norm": weight_change(edit)["tensors"][edit.names[0]]["rel_norm"],
                }
                points.append(point)
                print(json.dumps(point), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(points, f, indent=2)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for edit_name, module in sorted({(p["edit"], p["module"]) for p in points}):
            ps = [p for p in points if p["edit"] == edit_name and p["module"] == module]
            ax.plot(
                [p["specificity"] for p in ps], [p["generality"] for p in ps], "o-", label=f"{edit_name} ({module})"
            )
            for p in ps:
                ax.annotate(
                    f"μ={p['mu']:g}",
                    (p["specificity"], p["generality"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.axvline(0.95, color="grey", lw=0.8, ls="--")
        ax.axhline(0.85, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("specificity (lowest kept-rate of neighbours / attributes / entities)")
        ax.set_ylabel("generality (key removed, held-out phrasings)")
        ax.set_title("builtin:shapes, test split: DIFF-QUICKFIX over μ", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=130)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
