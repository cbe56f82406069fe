"""`locedit eval`: judge an edit file on a model with a suite, image by image, against a null control."""

from __future__ import annotations

import json
from pathlib import Path

from locedit.commands.common import add_model_args, add_options, load_model, settings_from_args
from locedit.errors import InvalidInputError
from locedit.evaluate.attacks import AttackSettings
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
    add_options(p, AttackSettings)  # --attack, --attack-prompts, --aliases, --misspellings, --soft-*, --attack-seed
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --attack: continue the run in --out (its finished parts are reused)",
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
    from locedit.evaluate.results import write_results
    from locedit.evaluate.run import evaluate
    from locedit.evaluate.suite import read_suite

    out = Path(args.out)
    attack = settings_from_args(AttackSettings, args)
    if args.resume and not attack.kinds:
        raise InvalidInputError("--resume continues a run with attacks; give its --attack too")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.resume:
        started = (out / "parts" / "config.json").is_file()  # a run with attacks (RunParts)
        raise FileExistsError(
            f"--out {args.out!r} exists and is not empty; choose a new folder"
            + (" or pass --resume (with the same options) to continue the run in it" if started else "")
        )
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
    if attack.kinds:
        return _run_with_attacks(args, pipe, edit, suite, judge, settings, suite_settings, attack)
    with tqdm(total=(2 + settings.null) * len(suite), desc="eval", unit="image", disable=args.quiet) as bar:
        report, info = evaluate(
            pipe, edit, suite, judge, settings, allow_overlap=args.allow_overlap, progress=bar.update
        )
    config = _config(args, edit, settings, suite_settings, info)
    write_results(report, out, config)
    _print_summary(args, report, info)
    return 0


def _config(args, edit, settings, suite_settings, info: dict) -> dict:
    """results.json's `config`: the run's settings and what `evaluate` found (suite source, judge, overlap)."""
    return {
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


def _print_summary(args, report, info: dict, attacks=()) -> None:
    from locedit.evaluate.attacks import summary_lines
    from locedit.evaluate.results import summary_table

    print(summary_table(report))
    if attacks:
        print("\nattack success: share of attack prompts whose image shows the removed concept")
        print("\n".join(summary_lines(attacks)))
    if info["overlap"]:
        print(
            f"warning: {len(info['overlap'])} suite prompt(s) were fitted on (--allow-overlap): "
            "those rates are in-sample"
        )
    print(f"results written to {args.out}/ (results.json, results.csv, items.jsonl, grid-*.png)")


def _run_with_attacks(args, pipe, edit, suite, judge, settings, suite_settings, attack) -> int:
    """The evaluation, then each attack, each part saved once done (RunParts): --resume reuses them."""
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from locedit.evaluate.attacks import AttackResult, attack_size, edit_key, exact_result, run_attack
    from locedit.evaluate.edit_eval import EvalReport
    from locedit.evaluate.results import RunParts, write_files, write_grids
    from locedit.evaluate.run import evaluate

    edit_key(edit)  # one removed concept, before any work
    resumable = {
        "model": args.model,
        "edit_fingerprint": edit.fingerprint,
        "edit_meta": {k: v for k, v in edit.meta.items() if k != "fit_captions"},
        "suite": [it.to_json() for it in suite],
        "judge": judge.name,
        "eval": asdict(settings),
        "attack": {k: v for k, v in asdict(attack).items() if k != "kinds"},
    }
    parts = RunParts(args.out, json.loads(json.dumps(resumable)), resume=args.resume)
    done = parts.load("eval")
    if done is None:
        with tqdm(total=(2 + settings.null) * len(suite), desc="eval", unit="image", disable=args.quiet) as bar:
            report, info = evaluate(
                pipe, edit, suite, judge, settings, allow_overlap=args.allow_overlap, progress=bar.update
            )
        write_grids(report, Path(args.out))  # now: the images are not kept in the saved part
        parts.save("eval", {"report": report.to_json(), "info": info})
    else:
        report, info = EvalReport.from_json(done["report"]), done["info"]
    results = [exact_result(report, judge, edit_key(edit))]
    for kind in attack.kinds:
        stored = parts.load(f"attack-{kind}")
        if stored is not None:
            results.append(AttackResult.from_json(stored))
            continue
        total = attack_size(kind, attack, settings)
        with tqdm(total=total, desc=f"attack {kind}", unit="step", disable=args.quiet) as bar:
            result = run_attack(kind, pipe, edit, suite, judge, attack, settings, progress=bar.update)
        parts.save(f"attack-{kind}", result.to_json())
        results.append(result)
    config = _config(args, edit, settings, suite_settings, info)
    config["attack"] = {**asdict(attack), "kinds": list(attack.kinds)}
    write_files(report, args.out, config, results)
    _print_summary(args, report, info, results)
    return 0
