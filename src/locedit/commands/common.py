"""What several CLI commands share: flags built from settings dataclasses, the model arguments
(MODEL, --device, --dtype), and --quiet (one meaning everywhere: no progress bars or messages;
stdout gets only the final summary, stderr only errors)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from locedit.errors import InvalidInputError
from locedit.options import cli_fields, flag_of


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _shown(field: dataclasses.Field) -> str:
    """The default as the help states it."""
    if field.metadata.get("shown"):
        return field.metadata["shown"]
    value = _default(field)
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser: argparse.ArgumentParser, settings: dict[str, type] | type) -> None:
    """Add a flag for every `option` field of the settings class(es), help and default read from them.

    `settings` is one dataclass, or {label: dataclass} when several share flags (the help then lists
    each one's default, e.g. "default: quickfix: 0.01; uce: 0.5"). Every flag parses to None when
    not given, so the dataclass' own default applies (see settings_from_args).
    """
    classes = settings if isinstance(settings, dict) else {"": settings}
    by_name: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for label, cls in classes.items():
        for field in cli_fields(cls):
            by_name.setdefault(field.name, []).append((label, field))
    for name, fields in by_name.items():
        label, field = fields[0]  # the first class' help and parsing
        meta = field.metadata
        shown = {}
        for lab, f in fields:
            shown.setdefault(_shown(f), []).append(lab)
        if len(shown) == 1:
            default_text = f"default: {next(iter(shown))}"
        else:
            default_text = "default: " + "; ".join(f"{' / '.join(labs)}: {text}" for text, labs in shown.items())
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        action = meta.get("action")
        if action == "flag":
            kwargs.update(action="store_const", const=not _default(field), help=meta["help"])
        else:
            kwargs["help"] = f"{meta['help']} ({default_text})"
            if action == "append":
                kwargs["action"] = "append"
            if meta.get("choices"):
                kwargs["choices"] = list(meta["choices"])
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag_of(classes[label], name), **kwargs)


def given_options(settings: type, args: argparse.Namespace) -> dict[str, Any]:
    """{field: value} of the `option` fields of `settings` given on the command line, parsed.

    A value that does not parse is an InvalidInputError naming the flag (one line, exit 2).
    """
    out = {}
    for field in cli_fields(settings):
        raw = getattr(args, field.name, None)
        if raw is None:
            continue
        parse = field.metadata.get("parse")
        if parse is not None and field.metadata.get("action") != "flag":
            try:
                raw = parse(raw)
            except InvalidInputError:
                raise
            except (TypeError, ValueError):
                kind = {int: "an integer", float: "a number"}.get(parse, "valid")
                raise InvalidInputError(
                    f"{flag_of(settings, field.name)} must be {kind} (got {raw!r}): {field.metadata['help']}"
                ) from None
        out[field.name] = raw
    return out


def settings_from_args(cls: type, args: argparse.Namespace, /, **extra: Any):
    """The settings dataclass `cls` from the flags given (the rest keep its defaults) and `extra` fields."""
    return cls(**given_options(cls, args), **extra)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """--quiet, the same on every command."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or messages: stdout gets only the final summary, stderr only errors",
    )


def say(args: argparse.Namespace, *message: Any) -> None:
    """Print a progress message or note, unless --quiet (the final summary is printed with print())."""
    if not getattr(args, "quiet", False):
        print(*message)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """MODEL positional plus --device / --dtype / --quiet."""
    from locedit.models.loading import DEFAULT_DEVICE, DEFAULT_DTYPE

    parser.add_argument(
        "model", metavar="MODEL", help="local diffusers pipeline folder, or builtin:NAME (e.g. builtin:shapes)"
    )
    parser.add_argument(
        "--device", default=DEFAULT_DEVICE, help=f"cpu, cuda, cuda:N, mps or auto (default: {DEFAULT_DEVICE})"
    )
    parser.add_argument(
        "--dtype", default=DEFAULT_DTYPE, help=f"float32, float16 or bfloat16 (default: {DEFAULT_DTYPE})"
    )
    add_quiet(parser)


def load_model(args: argparse.Namespace):
    from locedit.models import load_pipeline, parse_dtype, resolve_device

    device = resolve_device(args.device)  # validate before the (slow) load
    dtype = parse_dtype(args.dtype)
    return load_pipeline(args.model, device=device, dtype=dtype)
