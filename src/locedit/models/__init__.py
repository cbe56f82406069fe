"""Model adapter: load pipelines offline, detect their family, address their layers."""

from locedit.models.families import (
    FAMILIES,
    TEXT_TEMPLATES,
    Family,
    UnsupportedModelError,
    detect_family,
    num_text_layers,
    resolve_text_module,
    text_template,
)
from locedit.models.loading import (
    BUILTIN_MODELS,
    ModelNotFoundError,
    builtin_path,
    load_pipeline,
    parse_dtype,
    resolve_device,
    resolve_model_path,
)
from locedit.models.text import TextEncoderHandle, find_subject_span, text_encoders

__all__ = [
    "BUILTIN_MODELS",
    "FAMILIES",
    "TEXT_TEMPLATES",
    "Family",
    "ModelNotFoundError",
    "TextEncoderHandle",
    "UnsupportedModelError",
    "builtin_path",
    "detect_family",
    "find_subject_span",
    "load_pipeline",
    "num_text_layers",
    "parse_dtype",
    "resolve_device",
    "resolve_model_path",
    "resolve_text_module",
    "text_encoders",
    "text_template",
]
