"""Settings dataclasses are the one source of their defaults and checks: the CLI's flags, help texts
and parsing come from their `option` fields, and a flag left out keeps the dataclass' default."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from locedit.cli import build_parser
from locedit.commands.common import add_options, settings_from_args
from locedit.errors import InvalidInputError
from locedit.options import option, require


@dataclass
class Toy:
    rate: float = option(0.5, parse=float, help="a rate")
    size: int | None = option(None, parse=int, metavar="N", help="a size", shown="automatic")
    fast: bool = option(False, action="flag", help="go fast")
    kind: str = option("a", choices=("a", "b"), help="a kind")
    hidden: int = 3  # not a flag

    def __post_init__(self):
        require(self, "rate", 0 < self.rate < 1, "in (0, 1)")


@dataclass
class Other:
    rate: float = option(0.25, parse=float, help="another rate")


def _parser(settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_options(parser, settings)
    return parser


def test_flags_help_and_parsing_come_from_the_dataclass():
    parser = _parser(Toy)
    text = " ".join(parser.format_help().split())
    assert "--rate RATE a rate (default: 0.5)" in text and "--size N a size (default: automatic)" in text
    assert "--fast" in text and "--kind {a,b}" in text and "--hidden" not in text
    assert settings_from_args(Toy, parser.parse_args([])) == Toy()  # nothing given: the dataclass' defaults
    given = settings_from_args(Toy, parser.parse_args(["--rate", "0.1", "--size", "7", "--fast", "--kind", "b"]))
    assert given == Toy(rate=0.1, size=7, fast=True, kind="b")
    with pytest.raises(InvalidInputError, match=r"^--size must be an integer \(got 'x'\): a size$"):
        settings_from_args(Toy, parser.parse_args(["--size", "x"]))
    with pytest.raises(InvalidInputError, match=r"^--rate must be in \(0, 1\) \(got 2.0\)$"):  # the dataclass' check
        settings_from_args(Toy, parser.parse_args(["--rate", "2"]))


def test_a_flag_shared_by_several_classes_lists_each_default():
    text = " ".join(_parser({"toy": Toy, "other": Other}).format_help().split())
    assert "--rate RATE a rate (default: toy: 0.5; other: 0.25)" in text


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def test_commands_default_to_the_library_defaults():
    from locedit.builtin.demo import DemoSettings
    from locedit.edit import ESDSettings, LocoEditSettings, QuickFixConfig, UCESettings
    from locedit.evaluate.edit_eval import EvalSettings
    from locedit.trace import GenerationSettings, TraceRequest, TraceSettings

    args = build_parser().parse_args(["trace", "m", "--out", "o"])
    assert settings_from_args(TraceRequest, args, model="m", out="o") == TraceRequest("m", "o")
    assert settings_from_args(GenerationSettings, args) == GenerationSettings()
    assert settings_from_args(TraceSettings, args) == TraceSettings()
    args = build_parser().parse_args(["edit", "m", "--remove", "a", "--to", "b"])
    assert settings_from_args(QuickFixConfig, args) == QuickFixConfig()
    assert (
        settings_from_args(UCESettings, args) == UCESettings()
        and settings_from_args(ESDSettings, args) == ESDSettings()
    )
    assert (
        settings_from_args(EvalSettings, build_parser().parse_args(["eval", "m", "e", "--out", "o"])) == EvalSettings()
    )
    assert settings_from_args(DemoSettings, build_parser().parse_args(["demo"])) == DemoSettings()
    # the help states the dataclass' defaults
    assert f"(default: {GenerationSettings().steps})" in " ".join(_sub("trace").format_help().split())
    edit_help = " ".join(_sub("edit").format_help().split())
    lams = f"quickfix: {QuickFixConfig().lam:g}; uce: {UCESettings().lam:g}; locoedit*: {LocoEditSettings().lam:g}"
    assert f"(default: {lams})" in edit_help
    assert f"(default: {DemoSettings().eval_per_group})" in " ".join(_sub("demo").format_help().split())
