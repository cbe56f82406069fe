"""`locedit edit --method ...`: the baselines (ESD-x/u, Concept Ablation, UCE) behind the edit command's
flags. edit.py registers the flags and hands every method other than quickfix to this module."""

from __future__ import annotations

import argparse

from locedit.errors import InvalidInputError

METHODS = ("quickfix", "esd-x", "esd-u", "ablate", "ablate-full", "uce")
FINE_TUNING = ("esd-x", "esd-u", "ablate", "ablate-full")
# Methods whose edits change tensors a LoRA cannot carry (biases, norms, convolutions).
NOT_LORA = ("esd-u", "ablate-full")
# Edit flags (argparse dest -> flag) and the methods that read them.
METHOD_FLAGS = {
    "lam": ("--lam", ("quickfix", "uce")),
    "positions": ("--positions", ("quickfix", "uce")),
    "templates": ("--templates", ("quickfix", "uce", "ablate", "ablate-full")),
    "preserve": ("--preserve", ("quickfix", "uce")),
    "corpus": ("--corpus", ("quickfix",)),
    "corpus_weight": ("--corpus-weight", ("quickfix",)),
    "corpus_keys": ("--corpus-keys", ("quickfix",)),
    "module": ("--module", ("quickfix",)),
    "vocab_weight": ("--vocab-weight", ("quickfix",)),
    "steps": ("--steps", FINE_TUNING),
    "lr": ("--lr", FINE_TUNING),
    "seed": ("--seed", FINE_TUNING),
}


def add_baseline_args(p: argparse.ArgumentParser) -> None:
    """--method and the fine-tuning flags (read as text: bad values are one-line errors, exit 2)."""
    p.add_argument("--method", default="quickfix", metavar="METHOD",
                   help="quickfix (default: DIFF-QUICKFIX), esd-x / esd-u (ESD, erases --remove KEY; no --to), "
                   "ablate / ablate-full (Concept Ablation of KEY onto the anchor --to VALUE; cross-attention K/V or "
                   "all UNet weights), uce (closed-form cross-attention K/V edit)")
    p.add_argument("--steps", default=None, metavar="N", help="training steps of esd-*/ablate* (default 1000 / 100)")
    p.add_argument("--lr", default=None, metavar="LR", help="learning rate of esd-*/ablate* (default 1e-5 / 1.6e-5)")
    p.add_argument("--seed", default=None, metavar="S", help="seed of esd-*/ablate* (default 0)")


def _int(text: str, flag: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise InvalidInputError(f"{flag} must be {kind} (got {text!r})")
    return value


def _positive_float(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InvalidInputError(f"{flag} must be a number > 0 (got {text!r})")
    return value


def check_method_args(args: argparse.Namespace) -> str:
    """The chosen method, after checking that every given flag applies to it and the fine-tuning values."""
    method = args.method
    if method not in METHODS:
        raise InvalidInputError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    for dest, (flag, methods) in METHOD_FLAGS.items():
        value = getattr(args, dest, None)
        if value not in (None, []) and method not in methods:
            raise InvalidInputError(f"{flag} does not apply to --method {method} (it applies to {', '.join(methods)})")
    if method != "quickfix" and str(args.encoder) != "both":
        raise InvalidInputError(f"--encoder applies to --method quickfix only; {method} edits the UNet")
    if args.steps is not None:
        args.steps = _int(args.steps, "--steps", 1)
    if args.lr is not None:
        args.lr = _positive_float(args.lr, "--lr")
    if args.seed is not None:
        args.seed = _int(args.seed, "--seed", 0)
    if method in NOT_LORA and args.lora:
        raise InvalidInputError(f"--method {method} changes biases, norms or convolutions, which a LoRA cannot carry; "
                         "use --out (an edit file) or --save-pipeline")
    return method


def baseline_pairs(args: argparse.Namespace, method: str) -> list[tuple[str, str | None]]:
    """The (key, value) pairs of a baseline: ESD erases one key (value None); ablation maps one key onto
    one anchor; UCE takes any number of pairs (a value may be '': the start token)."""
    from locedit.commands.edit import parse_pairs

    if method in ("esd-x", "esd-u"):
        if args.to is not None or args.pair:
            raise InvalidInputError(f"{method} erases a concept towards the unconditional prediction: give --remove KEY "
                             "without --to or --pair")
        if not args.remove or not args.remove.strip():
            raise InvalidInputError(f"nothing to erase: give --remove KEY (e.g. --method {method} --remove 'van gogh')")
        return [(args.remove.strip(), None)]
    pairs = parse_pairs(args)
    if method in ("ablate", "ablate-full") and len(pairs) != 1:
        raise InvalidInputError(f"{method} ablates one concept onto one anchor: give --remove KEY --to ANCHOR once")
    if method in ("ablate", "ablate-full") and not pairs[0][1].strip():
        raise InvalidInputError(f"{method} needs a non-empty anchor: --to ANCHOR (e.g. --to painting)")
    return pairs


def run_baseline_edit(args: argparse.Namespace, method: str) -> int:
    """`locedit edit --method M` for every M other than quickfix; outputs as quickfix's."""
    from locedit.commands.common import load_model
    from locedit.commands.edit import check_outputs, read_templates, write_outputs

    pairs = baseline_pairs(args, method)
    templates = read_templates(args.templates)
    if args.lam is not None and not args.lam > 0:
        raise InvalidInputError(f"--lam must be > 0 (got {args.lam})")
    check_outputs(args)

    pipe = load_model(args)
    progress = not args.quiet
    if method in ("esd-x", "esd-u"):
        from locedit.edit.esd import esd

        edit = esd(pipe, pairs[0][0], method[-1], steps=args.steps, lr=args.lr, seed=args.seed, progress=progress)
    elif method in ("ablate", "ablate-full"):
        from locedit.edit.ablate import AblateSettings, ablate

        settings = AblateSettings(templates=tuple(templates)) if templates else None
        edit = ablate(pipe, pairs[0][0], pairs[0][1], "full" if method == "ablate-full" else "kv", settings=settings,
                      steps=args.steps, lr=args.lr, seed=args.seed, progress=progress)
    else:
        from locedit.edit.uce import uce

        edit = uce(pipe, pairs, preserve=args.preserve, lam=args.lam, templates=templates, positions=args.positions)
    print(edit.summary())
    print(f"edit took {edit.meta['seconds']:.2f} s")
    write_outputs(args, pipe, edit)
    return 0
