"""`locedit edit --method ...`: the methods behind the edit command's flags. Each method's settings
class (QuickFixConfig, ESDSettings, AblateSettings, UCESettings) defines its flags; edit.py registers
them and hands every method other than quickfix to this module."""

from __future__ import annotations

import argparse

from locedit.commands.common import add_options, load_model, say, settings_from_args
from locedit.errors import InvalidInputError
from locedit.options import cli_fields, flag_of

METHODS = ("quickfix", "esd-x", "esd-u", "ablate", "ablate-full", "uce")
# Methods whose edits change tensors a LoRA cannot carry (biases, norms, convolutions).
NOT_LORA = ("esd-u", "ablate-full")
# Flags that are arguments of the methods rather than settings (argparse dest -> flag, methods).
ARGUMENT_FLAGS = {"preserve": ("--preserve", ("quickfix", "uce"))}


def method_settings() -> dict[str, type]:
    """The settings class of each method: its `option` fields are the method's flags."""
    from locedit.edit import AblateSettings, ESDSettings, QuickFixConfig, UCESettings

    return {
        "quickfix": QuickFixConfig,
        "esd-x": ESDSettings,
        "esd-u": ESDSettings,
        "ablate": AblateSettings,
        "ablate-full": AblateSettings,
        "uce": UCESettings,
    }


def method_flags() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{argparse dest: (flag, the methods that read it)}, from the methods' settings classes."""
    out: dict[str, tuple[str, tuple[str, ...]]] = dict(ARGUMENT_FLAGS)
    for method, cls in method_settings().items():
        for field in cli_fields(cls):
            flag, methods = out.get(field.name, (flag_of(cls, field.name), ()))
            out[field.name] = (flag, (*methods, method))
    return out


def add_method_args(p: argparse.ArgumentParser) -> None:
    """--method and every method's setting flags (help and defaults from QuickFixConfig, UCESettings,
    AblateSettings, ESDSettings)."""
    from locedit.edit import AblateSettings, ESDSettings, QuickFixConfig, UCESettings

    p.add_argument(
        "--method",
        default="quickfix",
        metavar="METHOD",
        help="quickfix (default: DIFF-QUICKFIX), esd-x / esd-u (ESD, erases --remove KEY; no --to), "
        "ablate / ablate-full (Concept Ablation of KEY onto the anchor --to VALUE; cross-attention K/V or "
        "all UNet weights), uce (closed-form cross-attention K/V edit)",
    )
    add_options(p, {"quickfix": QuickFixConfig, "uce": UCESettings, "ablate*": AblateSettings, "esd-*": ESDSettings})


def check_method_args(args: argparse.Namespace) -> str:
    """The chosen method, after checking that every given flag applies to it."""
    method = args.method
    if method not in METHODS:
        raise InvalidInputError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    for dest, (flag, methods) in method_flags().items():
        value = getattr(args, dest, None)
        if value not in (None, []) and method not in methods:
            raise InvalidInputError(f"{flag} does not apply to --method {method} (it applies to {', '.join(methods)})")
    if method in NOT_LORA and args.lora:
        raise InvalidInputError(
            f"--method {method} changes biases, norms or convolutions, which a LoRA cannot carry; "
            "use --out (an edit file) or --save-pipeline"
        )
    return method


def baseline_pairs(args: argparse.Namespace, method: str) -> list[tuple[str, str | None]]:
    """The (key, value) pairs of a baseline: ESD erases one key (value None); ablation maps one key onto
    one anchor; UCE takes any number of pairs (a value may be '': the start token)."""
    from locedit.commands.edit import parse_pairs

    if method in ("esd-x", "esd-u"):
        if args.to is not None or args.pair:
            raise InvalidInputError(
                f"{method} erases a concept towards the unconditional prediction: give --remove KEY "
                "without --to or --pair"
            )
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
    from locedit.commands.edit import check_outputs, write_outputs

    pairs = baseline_pairs(args, method)
    settings = settings_from_args(method_settings()[method], args)
    check_outputs(args)

    pipe = load_model(args)
    progress = not args.quiet
    if method in ("esd-x", "esd-u"):
        from locedit.edit.esd import esd

        edit = esd(pipe, pairs[0][0], method[-1], settings=settings, progress=progress)
    elif method in ("ablate", "ablate-full"):
        from locedit.edit.ablate import ablate

        edit = ablate(
            pipe,
            pairs[0][0],
            pairs[0][1],
            "full" if method == "ablate-full" else "kv",
            settings=settings,
            progress=progress,
        )
    else:
        from locedit.edit.uce import uce

        edit = uce(pipe, pairs, preserve=args.preserve, settings=settings)
    print(edit.summary())
    say(args, f"edit took {edit.meta['seconds']:.2f} s")
    write_outputs(args, pipe, edit)
    return 0
