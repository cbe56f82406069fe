"""`locedit edit` (DIFF-QUICKFIX on a model, or a baseline: see baselines.py) and `locedit apply`
(an edit file onto a model)."""

from __future__ import annotations

import argparse
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

from locedit.commands.baselines import add_method_args, check_method_args, run_baseline_edit
from locedit.commands.common import add_model_args, add_options, load_model, say, settings_from_args
from locedit.edit.cache import CacheSettings
from locedit.edit.lora import DEFAULT_LORA_FORMAT, LORA_FORMATS
from locedit.errors import InvalidInputError
from locedit.io import atomic_dir
from locedit.models.loading import hf_progress_bars


def register(sub) -> None:
    p = sub.add_parser(
        "edit",
        help="remove or rewrite a concept with DIFF-QUICKFIX",
        description="Map a key concept onto a value concept in the text encoder, in closed form "
        "(e.g. --remove 'van gogh' --to painting).",
    )
    add_model_args(p)
    p.add_argument("--remove", metavar="KEY", help="concept to remove/rewrite (use with --to)")
    p.add_argument("--to", metavar="VALUE", help="concept the key is mapped onto")
    p.add_argument("--pair", action="append", default=[], metavar="KEY=VALUE", help="a key/value pair; repeatable")
    p.add_argument("--preserve", nargs="+", default=[], metavar="C", help="concepts that must stay as they are")
    p.add_argument("--out", metavar="EDIT", help="write the edit file (.safetensors)")
    p.add_argument("--lora", metavar="FILE", help="also export the edit as a LoRA file")
    p.add_argument(
        "--lora-format",
        choices=LORA_FORMATS,
        default=DEFAULT_LORA_FORMAT,
        help="diffusers (read by diffusers, ComfyUI, Forge) or kohya (read by every client, "
        f"AUTOMATIC1111 and kohya sd-scripts too); default {DEFAULT_LORA_FORMAT}",
    )
    p.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default: exact)")
    p.add_argument("--save-pipeline", metavar="DIR", help="save the edited pipeline as a diffusers folder")
    p.add_argument(
        "--force",
        action="store_true",
        help="edit even if a key or value is not a word the model knows (no caption of its corpus names it, "
        "or its tokenizer only spells it out)",
    )
    add_options(p, CacheSettings)  # --no-cache
    add_method_args(p)  # --method and every method's settings: --lam, --templates, --corpus..., --steps, --lr, ...
    p.set_defaults(func=run_edit)

    a = sub.add_parser("apply", help="apply an edit file to a model and save the edited pipeline")
    add_model_args(a)
    a.add_argument("edit", metavar="EDIT", help="edit file written by `locedit edit --out`")
    a.add_argument("--save-pipeline", metavar="DIR", required=True, help="where to save the edited pipeline")
    a.add_argument("--force", action="store_true", help="apply even if the model's fingerprint differs")
    a.set_defaults(func=run_apply)


def parse_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = []
    if (args.remove is None) != (args.to is None):
        raise InvalidInputError("--remove and --to go together: --remove 'van gogh' --to painting")
    if args.remove is not None:
        pairs.append((args.remove, args.to))
    for item in args.pair:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInputError(f"--pair {item!r} is not KEY=VALUE, e.g. --pair 'van gogh=painting'")
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise InvalidInputError("nothing to edit: give --remove KEY --to VALUE or --pair KEY=VALUE")
    return pairs


def check_output_file(path: str | None, flag: str) -> None:
    if path is not None and Path(path).is_dir():
        raise InvalidInputError(f"{flag} {path!r} is a folder; give a file name such as edit.safetensors")


def check_outputs(args: argparse.Namespace) -> None:
    """--lora-rank, --out, --lora and --save-pipeline, checked before any model loads."""
    if args.lora_rank is not None and args.lora_rank < 1:
        raise InvalidInputError(f"--lora-rank must be a positive integer (got {args.lora_rank})")
    check_output_file(args.out, "--out")
    check_output_file(args.lora, "--lora")
    check_output_dir(args.save_pipeline)
    if not (args.out or args.lora or args.save_pipeline):
        say(args, "note: no --out, --lora or --save-pipeline given: the edit is computed and reported, not saved")


def check_output_dir(path: str | None) -> None:
    if path is not None and Path(path).exists() and (not Path(path).is_dir() or any(Path(path).iterdir())):
        raise FileExistsError(f"--save-pipeline {path!r} exists and is not empty; choose a new folder")


def save_pipeline_atomically(pipe, out_dir: str) -> None:
    """save_pretrained into a temporary sibling folder, then rename it into place."""
    with atomic_dir(out_dir) as tmp, hf_progress_bars(False):
        pipe.save_pretrained(str(tmp), safe_serialization=True)


def run_edit(args) -> int:
    from locedit.edit import QuickFixConfig, quickfix

    method = check_method_args(args)
    if method != "quickfix":
        return run_baseline_edit(args, method)
    pairs = parse_pairs(args)
    config = settings_from_args(QuickFixConfig, args)  # checked; --templates and --corpus files read
    check_outputs(args)

    pipe = load_model(args)
    from locedit.edit.cache import disk_cache
    from locedit.edit.concepts import UnknownConceptWarning, check_concepts, model_corpus

    problems = check_concepts(pipe, pairs, model_corpus(pipe))
    if problems and not args.force:
        raise InvalidInputError("; ".join(problems) + "; check the spelling, or pass --force to edit anyway")
    for problem in problems:
        say(args, f"note: editing anyway (--force): {problem}")
    cache = settings_from_args(CacheSettings, args)
    with disk_cache(False) if not cache.enabled else nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownConceptWarning)  # reported above
        edit = quickfix(pipe, pairs, preserve=args.preserve, config=config)
    print(edit.summary())
    say(args, f"edit took {edit.meta['seconds'] * 1000:.1f} ms (capture + solve)")
    write_outputs(args, pipe, edit)
    return 0


def write_outputs(args: argparse.Namespace, pipe, edit) -> None:
    """--out (edit file), --lora (LoRA file) and --save-pipeline (the edited pipeline), each reported."""
    if args.out:
        edit.save(args.out)
        print(f"wrote edit {args.out}")
    if args.lora:
        report = edit.to_lora(args.lora, format=args.lora_format, rank=args.lora_rank)
        ranks, errors = report["ranks"], report["rel_errors"]
        if len(ranks) <= 4:
            for name, rank in ranks.items():
                print(
                    f"wrote LoRA {args.lora} ({args.lora_format}): {name} rank {rank}, "
                    f"relative error {errors[name]:.2e}"
                )
        else:
            print(
                f"wrote LoRA {args.lora} ({args.lora_format}): {len(ranks)} weights, ranks {min(ranks.values())}-"
                f"{max(ranks.values())}, largest relative error {max(errors.values()):.2e}"
            )
    if args.save_pipeline:
        t0 = time.perf_counter()
        edit.apply(pipe)
        say(args, f"applied in {(time.perf_counter() - t0) * 1000:.1f} ms")
        save_pipeline_atomically(pipe, args.save_pipeline)
        print(f"saved edited pipeline to {args.save_pipeline}")


def run_apply(args) -> int:
    from locedit.edit import Edit

    check_output_dir(args.save_pipeline)
    edit = Edit.load(args.edit)
    pipe = load_model(args)
    edit.apply(pipe, force=args.force)
    print(edit.summary())
    save_pipeline_atomically(pipe, args.save_pipeline)
    print(f"saved edited pipeline to {args.save_pipeline}")
    return 0
