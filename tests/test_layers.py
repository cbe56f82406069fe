"""The package layering, read from the source with `ast`: data flows one way, models -> probes ->
scorers -> trace | edit -> report -> evaluate -> builtin -> commands -> cli, and nothing imports a
layer above its own (in particular nothing below `builtin` imports it: it registers itself)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import locedit

ROOT = Path(locedit.__file__).resolve().parent

# Lowest first. A package may import its own modules and those of lower layers only; packages of one
# layer are independent of each other. The facade (locedit/__init__.py, __main__.py) is above all.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "io", "hooks", "_version"),
    ("options",),
    ("models",),
    ("probes",),
    ("scorers",),
    ("trace", "edit"),
    ("report",),
    ("evaluate",),
    ("builtin",),
    ("commands",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
LOWER = ("models", "probes", "scorers", "trace", "edit", "evaluate", "report", "hooks", "io", "errors")
FACADE = "locedit"  # `import locedit` / `from locedit import load_pipeline`: the top-level API


def _package(path: Path) -> str:
    """The top-level package (or module) of `path` below locedit/: "trace", "io", ..."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _is_unit(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def _targets(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, locedit package or FACADE) of every import in `path` (source: `text`, else the file),
    relative ones resolved, plus string constants naming a locedit module (imports through importlib)."""
    here = list(path.relative_to(ROOT.parent).with_suffix("").parts)  # ["locedit", "trace", "store"]
    if here[-1] == "__init__":
        here.pop()
    found = []
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source, filename=str(path))):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                package = here if path.name == "__init__.py" else here[:-1]
                base = package[: len(package) - node.level + 1] + base
            modules = [".".join(base + [alias.name]) if base == ["locedit"] else ".".join(base) for alias in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"locedit(\.\w+)+", node.value)
        ):
            modules = [node.value] if _is_unit(node.value.split(".")[1]) else []  # not a key like "locedit.lora"
        for module in modules:
            parts = module.split(".")
            if parts[0] != "locedit":
                continue
            target = parts[1] if len(parts) > 1 and _is_unit(parts[1]) else FACADE
            found.append((node.lineno, target))
    return found


def _sources(package: str) -> list[Path]:
    unit = ROOT / package
    return sorted(unit.rglob("*.py")) if unit.is_dir() else [ROOT / f"{package}.py"]


def _violations(packages, allowed) -> list[str]:
    bad = []
    for package in packages:
        for path in _sources(package):
            for line, target in _targets(path):
                if target != package and not allowed(package, target):
                    bad.append(
                        f"{path.relative_to(ROOT.parent)}:{line} imports locedit.{target}".replace(
                            f"locedit.{FACADE}", "the locedit facade"
                        )
                    )
    return bad


def test_every_package_has_a_layer():
    units = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert units - {"__init__", "__main__"} == set(RANK), "add the new package to LAYERS (and so to the layering)"


def test_the_parser_sees_every_kind_of_import():
    """The check itself: absolute, from-, relative and by-name imports of other layers are found."""
    source = (
        '"""locedit.builtin is not imported by this docstring."""\n'
        "import torch\nimport locedit.builtin.world\nfrom locedit.commands import common\n"
        "from .. import evaluate\nfrom ..builtin import plugins\nfrom . import engine\n"
        "from locedit import load_pipeline, report\nimport importlib\nimportlib.import_module('locedit.cli')\n"
        "meta = {'locedit.lora': 1}\n"
    )
    found = [target for _, target in _targets(ROOT / "trace" / "example.py", source)]
    assert found == ["builtin", "commands", "evaluate", "builtin", "trace", FACADE, "report", "cli"]


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_neither_builtin_nor_the_commands(package):
    assert _violations([package], lambda p, t: t not in ("builtin", "commands", "cli", FACADE)) == []


def test_tracing_and_editing_do_not_import_evaluation():
    assert _violations(["trace", "edit"], lambda p, t: t != "evaluate") == []


def test_no_package_imports_a_layer_above_or_beside_its_own():
    assert _violations(RANK, lambda p, t: t != FACADE and RANK[t] < RANK[p]) == []
