"""Knowledge edits: DIFF-QUICKFIX, the fine-tuning baselines (ESD, Concept Ablation), the Edit record,
LoRA export."""

from locedit.edit.ablate import AblateSettings, ablate
from locedit.edit.edit import Edit, EditFileError, FingerprintMismatchError
from locedit.edit.esd import ESDSettings, esd
from locedit.edit.quickfix import DEFAULT_TEMPLATES, QuickFixConfig, quickfix, solve_ridge

__all__ = [
    "DEFAULT_TEMPLATES",
    "AblateSettings",
    "ESDSettings",
    "Edit",
    "EditFileError",
    "FingerprintMismatchError",
    "QuickFixConfig",
    "ablate",
    "esd",
    "quickfix",
    "solve_ridge",
]
