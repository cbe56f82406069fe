"""Fixtures for tracing tests: small probe files (one thread and tiny pipelines: tests/conftest.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def probe_file(tmp_path):
    """Two probes, one and two subject tokens."""
    path = tmp_path / "probes.jsonl"
    records = [
        {"prompt": "a photo of a red cat", "subject": "cat", "attribute": "object"},
        {"prompt": "a harbour painted by van gogh", "subject": "van gogh", "attribute": "style"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
