"""Knowledge edits: DIFF-QUICKFIX, the fine-tuning and closed-form baselines (ESD, Concept Ablation,
UCE, LocoEdit), the Edit record, LoRA export."""

from locedit.edit.ablate import AblateSettings, ablate
from locedit.edit.edit import Edit, EditFileError, FingerprintMismatchError
from locedit.edit.esd import ESDSettings, esd
from locedit.edit.locoedit import LocoEditSettings, locoedit, locoedit_neurons
from locedit.edit.quickfix import DEFAULT_TEMPLATES, QuickFixConfig, quickfix, solve_ridge
from locedit.edit.uce import UCESettings, uce

__all__ = [
    "DEFAULT_TEMPLATES",
    "AblateSettings",
    "ESDSettings",
    "Edit",
    "EditFileError",
    "FingerprintMismatchError",
    "LocoEditSettings",
    "QuickFixConfig",
    "UCESettings",
    "ablate",
    "esd",
    "locoedit",
    "locoedit_neurons",
    "quickfix",
    "solve_ridge",
    "uce",
]
