"""Settings fields that also define a command-line flag, and the checks that name it.

A settings dataclass is the one owner of its defaults and of their checks: the library reads its
defaults, its `__post_init__` checks every value (raising InvalidInputError that names the flag and
the fix), and the CLI builds its flags, help texts and parsing from its fields
(`locedit.commands.common.add_options` / `settings_from_args`). A field becomes a flag by declaring
it with `option(...)`; fields declared with a plain default are library-only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from locedit.errors import InvalidInputError


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: Iterable[str] | None = None,
    metavar: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    action: str | None = None,
    shown: str | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that the CLI exposes as a flag.

    Args:
        default / default_factory: the field's default, as for dataclasses.field.
        help: what the value means (the CLI appends "(default: ...)" from the default itself).
        flag: the option string; None: "--" + the field name with "-" for "_".
        choices: the values the flag accepts (argparse checks them).
        metavar: the flag's value placeholder in the help.
        parse: turns the flag's text (or, with action "append", its list of texts) into the field's
            value; a ValueError / InvalidInputError becomes a one-line error naming the flag.
        action: "flag" for a switch (given: `not default`), "append" for a repeatable flag.
        shown: how the help states the default when its repr would not say it (e.g. None = "the model's").
    """
    metadata = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "parse": parse,
        "action": action,
        "shown": shown,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def cli_fields(settings: Any) -> list[dataclasses.Field]:
    """The fields of a settings dataclass (class or instance) declared with `option`."""
    return [f for f in dataclasses.fields(settings) if "help" in f.metadata]


def flag_of(settings: Any, name: str) -> str:
    """The command-line flag of field `name` ("--" + name with dashes unless the field says otherwise)."""
    field = next((f for f in dataclasses.fields(settings) if f.name == name), None)
    flag = field.metadata.get("flag") if field is not None else None
    return flag or "--" + name.replace("_", "-")


def _is_option(settings: Any, name: str) -> bool:
    return any(f.name == name for f in cli_fields(settings))


def _label(settings: Any, name: str) -> str:
    """How an error names a field: its flag, and the Python name too when the two differ ("--min-drop / min_drop");
    a field without a flag by its Python name."""
    if not _is_option(settings, name):
        return name
    flag = flag_of(settings, name)
    return flag if flag == f"--{name}" else f"{flag} / {name}"


def require(settings: Any, name: str, ok: bool, requirement: str, fix: str = "") -> None:
    """Raise InvalidInputError "<flag> must be <requirement> (got <value>)[; <fix>]" unless `ok` (a field
    without a flag is named by its Python name)."""
    if not ok:
        value = getattr(settings, name)
        raise InvalidInputError(
            f"{_label(settings, name)} must be {requirement} (got {value!r})" + (f"; {fix}" if fix else "")
        )


def require_choice(settings: Any, name: str, choices: Iterable[Any]) -> None:
    """Raise InvalidInputError "unknown <name> <value> (<flag>); use one of ..." unless the value is in `choices`."""
    choices = tuple(choices)
    value = getattr(settings, name)
    if value not in choices:
        flag = f" ({flag_of(settings, name)})" if _is_option(settings, name) else ""
        raise InvalidInputError(f"unknown {name} {value!r}{flag}; use one of {', '.join(str(c) for c in choices)}")


def is_int(value: Any, minimum: int) -> bool:
    """Whether `value` is an int (not a bool) >= minimum."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value: Any) -> bool:
    """Whether `value` is a real number (int or float, not a bool) and not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
