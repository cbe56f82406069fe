"""locedit: localize and edit knowledge in text-to-image diffusion models, in closed form."""

from locedit._version import __version__
from locedit.edit import Edit, QuickFixConfig, quickfix
from locedit.evaluate.run import evaluate as eval_edit
from locedit.models import detect_family, load_pipeline

__all__ = ["Edit", "QuickFixConfig", "__version__", "detect_family", "eval_edit", "load_pipeline", "quickfix"]
