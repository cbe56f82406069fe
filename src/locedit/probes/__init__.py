"""Probe sets for causal tracing: JSONL records, loading, validation, and the shipped default set."""

from locedit.probes.probes import (
    ATTRIBUTE_ALIASES,
    ATTRIBUTES,
    DEFAULT_PROBES,
    MODEL_PROBES_FILE,
    Probe,
    ProbeFileError,
    attribute_name,
    check_altered,
    load_probes,
    validate_probes,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_ALIASES",
    "DEFAULT_PROBES",
    "MODEL_PROBES_FILE",
    "Probe",
    "ProbeFileError",
    "attribute_name",
    "check_altered",
    "load_probes",
    "validate_probes",
]
