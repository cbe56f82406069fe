"""locedit: localize and edit knowledge in text-to-image diffusion models, in closed form."""

from locedit._version import __version__
from locedit.edit import AblateSettings, Edit, ESDSettings, QuickFixConfig, UCESettings, ablate, esd, quickfix, uce
from locedit.models import detect_family, load_pipeline

__all__ = [
    "AblateSettings",
    "ESDSettings",
    "Edit",
    "QuickFixConfig",
    "UCESettings",
    "__version__",
    "ablate",
    "detect_family",
    "esd",
    "load_pipeline",
    "quickfix",
    "uce",
]
