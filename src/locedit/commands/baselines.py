"""`locedit edit --method ...`: the methods behind the edit command's flags. Each method's settings
class (QuickFixConfig, ESDSettings, AblateSettings, UCESettings, LocoEditSettings) defines its flags; edit.py registers
them and hands every method other than quickfix to this module."""

from __future__ import annotations

import argparse

from locedit.commands.common import add_options, load_model, say, settings_from_args
from locedit.errors import InvalidInputError
from locedit.options import cli_fields, flag_of

METHODS = ("quickfix", "esd-x", "esd-u", "ablate", "ablate-full", "uce", "locoedit", "locoedit-neurons")
# Methods whose edits change tensors a LoRA cannot carry (biases, norms, convolutions).
NOT_LORA = ("esd-u", "ablate-full", "locoedit-neurons")
LOCOEDIT = ("locoedit", "locoedit-neurons")
# Flags that are arguments of the methods rather than settings (argparse dest -> flag, methods).
ARGUMENT_FLAGS = {
    "preserve": ("--preserve", ("quickfix", "uce")),
    "layers": ("--layers", LOCOEDIT),
    "locogen": ("--locogen", LOCOEDIT),
    "locogen_attribute": ("--locogen-attribute", LOCOEDIT),
}


def method_settings() -> dict[str, type]:
    """The settings class of each method: its `option` fields are the method's flags."""
    from locedit.edit import AblateSettings, ESDSettings, LocoEditSettings, QuickFixConfig, UCESettings

    return {
        "quickfix": QuickFixConfig,
        "esd-x": ESDSettings,
        "esd-u": ESDSettings,
        "ablate": AblateSettings,
        "ablate-full": AblateSettings,
        "uce": UCESettings,
        "locoedit": LocoEditSettings,
        "locoedit-neurons": LocoEditSettings,
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
    AblateSettings, ESDSettings, LocoEditSettings) and LocoEdit's --layers / --locogen."""
    from locedit.edit import AblateSettings, ESDSettings, LocoEditSettings, QuickFixConfig, UCESettings

    p.add_argument(
        "--method",
        default="quickfix",
        metavar="METHOD",
        help="quickfix (default: DIFF-QUICKFIX), esd-x / esd-u (ESD, erases --remove KEY; no --to), "
        "ablate / ablate-full (Concept Ablation of KEY onto the anchor --to VALUE; cross-attention K/V or "
        "all UNet weights), uce (closed-form cross-attention K/V edit), locoedit (closed-form K/V edit of the "
        "cross-attention layers --layers, e.g. LocoGen's pick), locoedit-neurons (the top --neurons K/V neurons "
        "of those layers replaced by their mean without the concept)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="auto|IDX",
        help="locoedit: cross-attention layer indices (forward order, as `locedit locogen` reports them), "
        "or auto: the window a LocoGen run picked (--locogen RUNDIR)",
    )
    p.add_argument("--locogen", metavar="RUNDIR", help="locoedit --layers auto: the finished LocoGen run to read")
    p.add_argument(
        "--locogen-attribute",
        metavar="NAME",
        help="locoedit --layers auto: take the run's pick for this attribute (default: over all its probes)",
    )
    add_options(
        p,
        {
            "quickfix": QuickFixConfig,
            "uce": UCESettings,
            "ablate*": AblateSettings,
            "esd-*": ESDSettings,
            "locoedit*": LocoEditSettings,
        },
    )


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
    elif method in LOCOEDIT:
        from locedit.edit.locoedit import check_layers, locoedit, locoedit_neurons

        layers = locoedit_layers(args)
        check_layers(pipe.unet, layers)
        if method == "locoedit":
            edit = locoedit(pipe, pairs, layers, settings=settings)
        else:
            edit = locoedit_neurons(pipe, pairs, layers, settings=settings)
    else:
        from locedit.edit.uce import uce

        edit = uce(pipe, pairs, preserve=args.preserve, settings=settings)
    print(edit.summary())
    say(args, f"edit took {edit.meta['seconds']:.2f} s")
    write_outputs(args, pipe, edit)
    return 0


def locoedit_layers(args: argparse.Namespace) -> list[int]:
    """--layers as cross-attention layer indices: integers as given, or `auto` read from the LocoGen run
    --locogen (its pick for --locogen-attribute, default over all its probes)."""
    values = [v for item in args.layers or [] for v in item.split(",") if v.strip()]
    if not values:
        raise InvalidInputError("--method locoedit needs --layers IDX [IDX ...] or --layers auto --locogen RUNDIR")
    if [v.strip().lower() for v in values] == ["auto"]:
        if not args.locogen:
            raise InvalidInputError("--layers auto reads a LocoGen run: give --locogen RUNDIR (from `locedit locogen`)")
        from locedit.report.locogen import ALL, read_selection

        return list(read_selection(args.locogen, args.locogen_attribute or ALL)["indices"])
    if args.locogen or args.locogen_attribute:
        raise InvalidInputError("--locogen and --locogen-attribute go with --layers auto only")
    try:
        return [int(v) for v in values]
    except ValueError:
        raise InvalidInputError(
            f"--layers {' '.join(values)!r} must be cross-attention layer indices (e.g. --layers 3 4) or auto"
        ) from None
