"""The package version (read by pyproject at build time and recorded in every edit and run)."""

__version__ = "0.1.0"
