"""Edit quality of DIFF-QUICKFIX variants on a built-in model (shapes or scenes), on held-out suites.

Every number is measured on prompts the edit was not fitted on (locedit.builtin.edit_suite: the
`dev` split chose locedit's defaults, the `test` split only reports), image by image with fixed
seeds, judged by the world's classifier: efficacy / generality (key gone), and the kept-rate of each
specificity group (neighbours, attributes, entities), with ‖ΔW‖/‖W‖ of each variant and, for the
library default, the null control (a random ΔW of the same norm).

    python benchmarks/edit_quality.py [--split test] [--n 40] [--edits style,artist,colour,shape,fact] [--json out.json]
    python benchmarks/edit_quality.py --null only --json nulls.json    # the null control of every variant
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from locedit import load_pipeline, quickfix
from locedit.builtin.edit_suite import edit_suite, world_of
from locedit.evaluate.edit_eval import EvalSettings, evaluate_edit, null_edit, weight_change
from locedit.evaluate.judges import make_judge
from locedit.io import write_json

EDITS = {
    "style": ("striped", "plain"),
    "artist": ("karl brenner", "mira solen"),
    "colour": ("red", "blue"),
    "shape": ("circle", "square"),
    "fact": ("veloria", "norland"),
}
GROUPS = (
    ("efficacy", "removed"),
    ("generality", "removed"),
    ("neighbours", "kept"),
    ("attributes", "kept"),
    ("entities", "kept"),
    ("other_route", "kept"),
)


def variants() -> dict[str, dict]:
    """QuickFix settings compared (keyword arguments of locedit.quickfix)."""
    out_proj = dict(module="attn_out")
    return {
        "paper: out_proj, templates": dict(**out_proj, corpus_keys=0, corpus_weight=0.0),
        "out_proj, mined, μ=100 (old default)": dict(**out_proj, corpus_weight=100.0),
        "out_proj, mined, μ=10⁴": dict(**out_proj, corpus_weight=1e4),
        "v_proj, templates, μ=10": dict(corpus_keys=0),
        "v_proj, mined, no vocab prior": dict(vocab_weight=0.0),
        "v_proj, mined, μ=100": dict(corpus_weight=100.0),
        "library default": dict(),
    }


def fmt(rate) -> str:
    return "   -  " if rate is None or not rate.n else f"{rate.rate:5.2f} "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:shapes")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--n", type=int, default=40, help="prompts per group")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--edits", default=",".join(EDITS))
    parser.add_argument("--only", default=None, help="semicolon-separated variant names to run")
    parser.add_argument(
        "--variants", default=None, help="JSON file {name: quickfix keyword arguments} replacing the built-in list"
    )
    parser.add_argument(
        "--null",
        choices=["default", "all", "only"],
        default="default",
        help="null control (random ΔW of the edit's norm) for the library default only, for every "
        "variant, or only the null controls (no edited images; a second pass)",
    )
    parser.add_argument(
        "--judge", default=None, help="judge spec (default: the classifier in the --model folder, else builtin)"
    )
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    w = world_of(pipe)  # builtin:shapes or builtin:scenes (or a folder of either)
    # a recipe's exported folder (not installed in the package) is judged by the classifier inside it
    own = Path(args.model) / "classifier.safetensors"
    judge = make_judge(args.judge or (f"builtin:{args.model}" if own.is_file() else "builtin"))
    chosen = variants()
    if args.variants:
        with open(args.variants) as f:
            chosen = json.load(f)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(";")}
    report = {}
    for edit_name in args.edits.split(","):
        key, value = EDITS[edit_name]
        print(
            f"\n## {edit_name}: {key!r} -> {value!r} "
            f"({args.split} split, {args.n} prompts per group, {args.steps} steps)"
        )
        print(f"{'variant':30s} " + " ".join(f"{g[:6]:>6s}" for g, _ in GROUPS) + "  ‖ΔW‖/‖W‖ rank  null-spec   ms")
        baseline = None
        report[edit_name] = {}
        for name, kwargs in chosen.items():
            edit = quickfix(pipe, [(key, value)], **kwargs)
            items = edit_suite(key, value, n=args.n, seed=0, split=args.split, exclude=edit.meta["fit_captions"], w=w)
            t0 = time.perf_counter()
            if baseline is not None and [(i.prompt, i.seed) for i in baseline.items] != [
                (i.prompt, i.seed) for i in items
            ]:
                baseline = None
            judged = null_edit(edit) if args.null == "only" else edit
            with_null = args.null == "all" or (args.null == "default" and name == "library default")
            result = evaluate_edit(
                pipe, judged, items, judge, EvalSettings(steps=args.steps, null=with_null), baseline=baseline
            )
            baseline = baseline or result
            rates = result.rates["after"]
            change = weight_change(edit)["tensors"][edit.names[0]]
            null_spec = result.specificity("null") if "null" in result.rates else float("nan")
            label = f"{name} (null)" if args.null == "only" else name
            print(
                f"{label:30s} "
                + " ".join(fmt(rates.get(g)) for g in GROUPS)
                + f"  {change['rel_norm']:7.2f} {change['rank']:4d}  {null_spec:8.2f}"
                f" {edit.meta['seconds'] * 1000:5.0f}"
                f"   ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            report[edit_name][name] = {
                "settings": kwargs,
                "rows": result.rows(),
                "weight": {"tensors": {edit.names[0]: change}},
                "null_only": args.null == "only",
            }
    if args.json:
        write_json(args.json, report)  # atomic


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
