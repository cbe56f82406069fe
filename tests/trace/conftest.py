"""Fixtures for tracing tests: one torch thread (tiny models run 100× faster on a busy 2-core box
with one thread than with several competing ones), tiny pipelines and small probe files."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
