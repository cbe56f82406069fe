"""`locedit eval`: judge an edit file on a model with a suite, image by image, against a null control."""

from __future__ import annotations

from pathlib import Path

from locedit.commands.common import add_model_args, add_options, load_model, settings_from_args
from locedit.errors import InvalidInputError
from locedit.evaluate.edit_eval import EvalSettings
from locedit.evaluate.judges import CLIP_TOLERANCE
from locedit.evaluate.suite import SuiteSettings


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="judge an edit: efficacy, generality, specificity groups, null control",
        description="Generate every suite prompt with its seed before and after the edit (and with a random ΔW of "
        "the edit's norm, the null control), judge each image, and report rates with 95% intervals.",
    )
    add_model_args(p)
    p.add_argument("edit", metavar="EDIT", help="edit file written by `locedit edit --out`")
    p.add_argument(
        "--suite",
        default="builtin",
        help="JSONL suite (fields: prompt, group, seed, expect, key, target, key_text, value_text) or "
        "'builtin' (generated from the built-in world for the edit's pair; default)",
    )
    add_options(p, SuiteSettings)  # --per-group, --seed, --split
    p.add_argument(
        "--judge", default=None, help="builtin (built-in models; default there) or clip:PATH (a local CLIP folder)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=CLIP_TOLERANCE,
        help=f"clip judge: CLIP-Score points a kept prompt may lose (default {CLIP_TOLERANCE:g})",
    )
    add_options(p, EvalSettings)  # --steps, --guidance, --batch, --no-null
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even if suite prompts are captions the edit was fitted on",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="results folder to create (results.json, results.csv, items.jsonl, grids)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm.auto import tqdm

    from locedit.edit import Edit
    from locedit.evaluate.judges import ClipJudge, make_judge
    from locedit.evaluate.results import summary_table, write_results
    from locedit.evaluate.run import evaluate
    from locedit.evaluate.suite import read_suite

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {args.out!r} exists and is not empty; choose a new folder")
    settings = settings_from_args(EvalSettings, args)
    suite_settings = settings_from_args(SuiteSettings, args)
    suite = (
        args.suite if args.suite == "builtin" else read_suite(args.suite)
    )  # a bad suite fails before the model loads
    edit = Edit.load(args.edit)
    judge_spec = args.judge or ("builtin" if args.model.startswith("builtin:") else None)
    if judge_spec is None:
        raise InvalidInputError("no judge for this model: give --judge clip:PATH (a local transformers CLIP folder)")
    if args.suite == "builtin" and not args.model.startswith("builtin:"):
        raise InvalidInputError("the builtin suite is for built-in models; give --suite FILE (JSONL) for this model")
    judge = (
        ClipJudge(judge_spec.removeprefix("clip:"), tolerance=args.tolerance)
        if judge_spec.startswith("clip:")
        else make_judge(judge_spec)
    )
    pipe = load_model(args)
    if suite == "builtin":  # drawn for the loaded model's world
        from locedit.evaluate.suite import make_suite

        suite = make_suite("builtin", edit, suite_settings, pipe=pipe)
    with tqdm(total=(2 + settings.null) * len(suite), desc="eval", unit="image", disable=args.quiet) as bar:
        report, info = evaluate(
            pipe, edit, suite, judge, settings, allow_overlap=args.allow_overlap, progress=bar.update
        )
    config = {
        "model": args.model,
        "edit": str(args.edit),
        "edit_meta": {k: v for k, v in edit.meta.items() if k != "fit_captions"},
        "steps": settings.steps,
        "guidance": settings.guidance,
        "null": settings.null,
        "split": suite_settings.split,
        "per_group": suite_settings.per_group,
        "seed": suite_settings.seed,
        **info,
        "suite": args.suite if args.suite != "builtin" else f"builtin ({suite_settings.split} split)",
    }
    write_results(report, out, config)
    print(summary_table(report))
    if info["overlap"]:
        print(
            f"warning: {len(info['overlap'])} suite prompt(s) were fitted on (--allow-overlap): "
            "those rates are in-sample"
        )
    print(f"results written to {args.out}/ (results.json, results.csv, items.jsonl, grid-*.png)")
    return 0
