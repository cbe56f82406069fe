"""Edit quality on the built-in shapes model: efficacy, generality, specificity of DIFF-QUICKFIX
variants, judged by the world's classifier on fixed seeds, all measured in one run.

For each edit (a style word, an artist, a colour) it evaluates the unedited model once and then
every variant: key captions from templates only or also mined from the model's corpus, edited
positions (last / last+after), preserve sets (the other values of the same attribute), and the
weight of the covariance term over the corpus (MEMIT/EMCID-style).

    python benchmarks/edit_quality.py [--n 32] [--steps 20] [--edits style,artist,colour] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from locedit import load_pipeline, quickfix
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import edit_suite
from locedit.evaluate.edit_eval import evaluate_items, retention

EDITS = {
    "style": ("striped", "plain", ["dotted", "checkered", "plain"]),
    "artist": ("karl brenner", "mira solen", ["lena dupois", "ivo marek", "mira solen"]),
    "colour": ("red", "blue", ["yellow", "green", "purple", "blue"]),
}


def variants(preserve: list[str]) -> dict[str, dict]:
    """QuickFix settings compared, on the model's own corpus (locedit_corpus.txt). corpus_keys=0:
    key captions from the templates only; corpus_weight=0: no covariance term."""
    templates_only = dict(corpus_keys=0)
    return {
        "templates, last+after (paper)": dict(positions="last+after", corpus_weight=0.0, **templates_only),
        "templates, last+after, μ=10": dict(positions="last+after", corpus_weight=10.0, **templates_only),
        "templates, last+after +preserve": dict(positions="last+after", preserve=preserve, corpus_weight=0.0, **templates_only),
        "mined, last, μ=100": dict(positions="last", corpus_weight=100.0),
        "mined, last+after, μ=100": dict(positions="last+after", corpus_weight=100.0),
        "mined, last+after, μ=1000": dict(positions="last+after", corpus_weight=1000.0),
        "mined +preserve, last+after, μ=100": dict(positions="last+after", preserve=preserve, corpus_weight=100.0),
        "mined +preserve, last+after, μ=1000": dict(positions="last+after", preserve=preserve, corpus_weight=1000.0),
        "library default": dict(),
    }


COLUMNS = ("efficacy", "efficacy_to_target", "generality", "specificity", "specificity_retained", "specificity_style",
           "specificity_colour", "specificity_shape", "efficacy_others_kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--n", type=int, default=32, help="prompts per group")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--edits", default="style,artist,colour")
    parser.add_argument("--only", default=None, help="comma-separated variant names to run")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    classify = ShapesClassifier.load().predict
    report = {}
    for edit_name in args.edits.split(","):
        key, value, preserve = EDITS[edit_name]
        items = edit_suite(key, value, n=args.n, seed=0)
        print(f"\n## {edit_name}: {key!r} -> {value!r} ({args.n} prompts per group, {args.steps} steps, fixed seeds)")
        print(f"{'variant':34s} " + " ".join(f"{c.replace('specificity', 'spec').replace('efficacy', 'eff')[:12]:>12s}" for c in COLUMNS) + "   edit ms")
        t0 = time.perf_counter()
        base_result = evaluate_items(pipe, items, classify, steps=args.steps, guidance=args.guidance)
        base = base_result.rates
        print(f"{'before':34s} " + " ".join(f"{base.get(c, float('nan')):12.2f}" for c in COLUMNS) +
              f"   (eval {time.perf_counter() - t0:.0f} s)")
        report[edit_name] = {"key": key, "value": value, "before": base, "variants": {}}
        chosen = variants(preserve)
        if args.only:
            chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
        for name, kwargs in chosen.items():
            edit = quickfix(pipe, [(key, value)], **kwargs)
            edit.apply(pipe)
            try:
                result = evaluate_items(pipe, items, classify, steps=args.steps, guidance=args.guidance)
                rates = {**result.rates, **retention(items, base_result.predictions, result.predictions)}
            finally:
                edit.revert(pipe)
            ms = edit.meta["seconds"] * 1000
            report[edit_name]["variants"][name] = {"rates": rates, "edit_ms": ms}
            print(f"{name:34s} " + " ".join(f"{rates.get(c, float('nan')):12.2f}" for c in COLUMNS) + f"   {ms:7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
