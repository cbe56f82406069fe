"""Command-line entry point: a thin argparse front over the library; each command lives in its own module.

Every command module exposes `register(subparsers)`, which adds its parser and sets `func`. Every
command takes --quiet (commands/common.py): no progress bars or messages, only the final summary.
Bad input raises one of USER_ERRORS (locedit's own LoceditError, or a user's file missing or in
the way); main() prints one line naming the problem and exits 2. Anything else is a bug: its
traceback is shown and the exit code is 1. A closed stdout (`locedit report DIR | head -1`) ends any
command quietly with BROKEN_PIPE_EXIT.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from locedit._version import __version__
from locedit.errors import LoceditError

# Exceptions that mean "the user's input is wrong": one line, exit code 2, no traceback.
USER_ERRORS = (LoceditError, FileNotFoundError, FileExistsError, NotADirectoryError)

# Exit code when the reader of stdout closes it early (`locedit report DIR | head -1`): the command stops
# quietly with 128 + SIGPIPE (13), the status a shell reports for any Unix tool a closed pipe stops
# (`yes | head -1`), so scripts under `set -o pipefail` see locedit behave like cat or grep; 1 would claim
# a bug and 0 would hide that the output was cut short.
BROKEN_PIPE_EXIT = 141


# Command modules under locedit.commands, one per command group (named after its command), in help order.
COMMANDS = ("info", "edit", "eval", "trace", "locogen", "report", "demo")


def _command_modules():
    import importlib

    return [importlib.import_module(f"locedit.commands.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="locedit",
        description="Localize and edit knowledge in text-to-image diffusion models (causal tracing, DIFF-QUICKFIX).",
    )
    parser.add_argument("--version", action="version", version=f"locedit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        module.register(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep diffusers' and transformers' info/warning chatter (deprecations, optional backends) off the CLI."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


def _library_bars(enabled: bool):
    """--quiet also silences diffusers' and transformers' own progress bars (e.g. loading a CLIP judge)."""
    from contextlib import nullcontext

    from locedit.models.loading import hf_progress_bars

    return nullcontext() if enabled else hf_progress_bars(False)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0 ok, 2 bad input, 1 a bug, BROKEN_PIPE_EXIT)."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's flush at exit
    except BrokenPipeError:
        # Python's recipe (docs of `signal`, "Note on SIGPIPE"): point stdout at devnull, so that the flush at
        # exit cannot fail again and print "Exception ignored ...", and stop without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and --version print here, so they are covered by main's catch too
    _quiet_libraries()
    try:
        with _library_bars(not getattr(args, "quiet", False)):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of stdout went away (`locedit report DIR | head -1`): not a bug
        raise
    except USER_ERRORS as err:
        print(f"locedit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception:  # a bug, not bad input: show where
        traceback.print_exc()
        print(f"locedit {args.command}: internal error (the traceback above); please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
