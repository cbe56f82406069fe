"""Built-in models shipped inside the package: name -> diffusers pipeline folder.

``builtin:shapes`` is a small Stable-Diffusion-format model trained on the shapes world
(see ``world.py``, ``train.py`` and ``MODEL_CARD.md``); its classifier scorer is ``classifier.py``.
"""

from __future__ import annotations

from pathlib import Path

from locedit.errors import InvalidInputError

_HERE = Path(__file__).resolve().parent

#: built-in model name -> folder loadable by ``diffusers.StableDiffusionPipeline.from_pretrained``.
BUILTIN_MODELS: dict[str, Path] = {"shapes": _HERE / "shapes"}


def builtin_path(name: str) -> Path:
    """Folder of the built-in model ``name`` (a leading ``builtin:`` is accepted).

    Raises ValueError naming the available models for an unknown name.
    """
    key = name.removeprefix("builtin:")
    if key not in BUILTIN_MODELS:
        raise InvalidInputError(f"unknown built-in model {name!r}; available: {', '.join(sorted(BUILTIN_MODELS))}")
    return BUILTIN_MODELS[key]


__all__ = ["BUILTIN_MODELS", "builtin_path"]
