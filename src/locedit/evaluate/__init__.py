"""Scoring generated images: scorers for causal tracing and evaluation."""
