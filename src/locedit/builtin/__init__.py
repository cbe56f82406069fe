"""The built-in shapes model: its world, classifier, tokenizer, training, edit suites and demo.

``builtin:shapes`` is a small Stable-Diffusion-format model trained on the shapes world
(see ``world.py``, ``train.py`` and ``MODEL_CARD.md``); its classifier is ``classifier.py``. Importing
this package registers the ``builtin`` scorer, judge and suite (``plugins.py``); the table of built-in
model folders lives with loading (``locedit.models.loading``).
"""

from __future__ import annotations

from locedit.builtin import plugins  # noqa: F401  (registers the builtin scorer, judge and suite)
from locedit.models.loading import BUILTIN_MODELS, builtin_path

__all__ = ["BUILTIN_MODELS", "builtin_path"]
