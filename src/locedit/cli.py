"""Command-line entry point: a thin argparse front over the library; each command lives in its own module.

Every command module exposes `register(subparsers)`, which adds its parser and sets `func`.
Bad input raises one of USER_ERRORS; main() prints one line naming the problem and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from locedit._version import __version__

# Exceptions that mean "the user's input is wrong": one line, exit code 2, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, NotADirectoryError)


def _command_modules():
    from locedit.commands import edit_cmds, eval_cmd, info_cmd

    modules = [info_cmd, edit_cmds, eval_cmd]
    try:  # tracing commands (locedit trace / report) register themselves when present
        from locedit.commands import trace_cmds

        modules.append(trace_cmds)
    except ImportError:
        pass
    try:  # the built-in model's demo and evaluation
        from locedit.commands import demo_cmds

        modules.append(demo_cmds)
    except ImportError:
        pass
    return modules


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"locedit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
