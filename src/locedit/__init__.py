"""locedit: localize and edit knowledge in text-to-image diffusion models, in closed form."""

import locedit.builtin  # noqa: F401  (registers the `builtin` scorer, judge and suite, so the specs work everywhere)
from locedit._version import __version__
from locedit.edit import (
    AblateSettings,
    Edit,
    ESDSettings,
    LocoEditSettings,
    QuickFixConfig,
    UCESettings,
    ablate,
    esd,
    locoedit,
    locoedit_neurons,
    quickfix,
    uce,
)
from locedit.evaluate.run import evaluate as eval_edit
from locedit.models import detect_family, load_pipeline

__all__ = [
    "AblateSettings",
    "ESDSettings",
    "Edit",
    "LocoEditSettings",
    "QuickFixConfig",
    "UCESettings",
    "__version__",
    "ablate",
    "detect_family",
    "esd",
    "eval_edit",
    "load_pipeline",
    "locoedit",
    "locoedit_neurons",
    "quickfix",
    "uce",
]
