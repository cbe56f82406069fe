"""locedit's own error classes: input a user can fix. The CLI prints these (and missing or
existing user files) as one line with exit code 2; anything else is a bug and shows its traceback."""

from __future__ import annotations


class LoceditError(Exception):
    """Base of every error locedit raises on purpose about its input."""


class InvalidInputError(LoceditError, ValueError):
    """A value, setting or file content locedit cannot use (also a ValueError, for callers catching those)."""
