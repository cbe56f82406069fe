"""Closed-form knowledge edits: DIFF-QUICKFIX, the Edit record, LoRA export."""

from locedit.edit.edit import Edit, EditFileError, FingerprintMismatchError
from locedit.edit.quickfix import DEFAULT_TEMPLATES, QuickFixConfig, quickfix, solve_ridge

__all__ = [
    "DEFAULT_TEMPLATES",
    "Edit",
    "EditFileError",
    "FingerprintMismatchError",
    "QuickFixConfig",
    "quickfix",
    "solve_ridge",
]
