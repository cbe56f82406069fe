"""Probe sets for causal tracing: JSONL records, loading, validation, and the shipped default set."""

from locedit.probes.probes import ATTRIBUTES, DEFAULT_PROBES, Probe, ProbeFileError, load_probes, validate_probes

__all__ = ["ATTRIBUTES", "DEFAULT_PROBES", "Probe", "ProbeFileError", "load_probes", "validate_probes"]
