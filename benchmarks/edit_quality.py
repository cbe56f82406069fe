"""Edit quality on the built-in shapes model: efficacy, generality, specificity of DIFF-QUICKFIX
variants, judged by the world's classifier on fixed seeds, all measured in one run.

For each edit (a style word, an artist, a colour) it evaluates the unedited model once and then
every variant: edited positions (last / last+after), preserve sets (the other values of the same
attribute), λ, and the covariance term over a corpus of world captions (MEMIT/EMCID-style).

    python benchmarks/edit_quality.py [--n 32] [--steps 20] [--edits style,artist,colour] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from locedit import load_pipeline, quickfix
from locedit.builtin import world
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.edit_suite import edit_suite
from locedit.evaluate.edit_eval import evaluate_items, retention

EDITS = {
    "style": ("striped", "plain", ["dotted", "checkered", "plain"]),
    "artist": ("karl brenner", "mira solen", ["lena dupois", "ivo marek", "mira solen"]),
    "colour": ("red", "blue", ["yellow", "green", "purple", "blue"]),
}


def corpus(n: int = 256, seed: int = 0) -> list[str]:
    """A sample of training captions of the world (the 'general knowledge' the edit should keep)."""
    rng = np.random.default_rng(seed)
    return [world.sample_training_pair(rng)[1] for _ in range(n)]


def variants(preserve: list[str], captions: list[str]) -> dict[str, dict]:
    """QuickFix settings compared; corpus_weight=0 marks the variants without the covariance term."""
    plain = dict(corpus_weight=0.0)
    cov = lambda mu: dict(corpus=captions, corpus_weight=mu)  # noqa: E731
    return {
        "last": dict(positions="last", **plain),
        "last+after": dict(positions="last+after", **plain),
        "last+after +preserve": dict(positions="last+after", preserve=preserve, **plain),
        "last+after +preserve λ=0.1": dict(positions="last+after", preserve=preserve, lam=0.1, **plain),
        "last+after +preserve λ=1": dict(positions="last+after", preserve=preserve, lam=1.0, **plain),
        "last+after +preserve λ=10": dict(positions="last+after", preserve=preserve, lam=10.0, **plain),
        "last+after +cov μ=1": dict(positions="last+after", **cov(1.0)),
        "last+after +cov μ=10": dict(positions="last+after", **cov(10.0)),
        "last+after +cov μ=100": dict(positions="last+after", **cov(100.0)),
        "last+after +preserve +cov μ=10": dict(positions="last+after", preserve=preserve, **cov(10.0)),
        "last +cov μ=10": dict(positions="last", **cov(10.0)),
        "last +cov μ=100": dict(positions="last", **cov(100.0)),
        "last +preserve +cov μ=10": dict(positions="last", preserve=preserve, **cov(10.0)),
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
    captions = corpus()
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
        chosen = variants(preserve, captions)
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
