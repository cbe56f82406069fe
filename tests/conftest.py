"""Shared fixtures: tiny random SD1/SD2/SDXL pipelines saved to disk and loaded back offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).parent / "data"

# Tiny models run fastest on one thread; several threads per process on a small, busy machine
# (CI's 2 cores, other test processes) spend their time in contention.
torch.set_num_threads(1)
FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory) -> Path:
    """vocab.json + merges.txt of the real CLIP BPE tokenizer (from tests/data, open_clip's file)."""
    from locedit.models.tiny import clip_tokenizer_files

    return clip_tokenizer_files(DATA / "bpe_simple_vocab_16e6.txt.gz", tmp_path_factory.mktemp("clip_tokenizer"))


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer_files) -> dict[str, Path]:
    """Saved diffusers folders of tiny random pipelines, one per family."""
    from locedit.models.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny_models")
    # Distinct seeds: the families' weights (and so their fingerprints) must differ.
    return {fam: save_tiny_pipeline(fam, tokenizer_files, root / fam, seed=i) for i, fam in enumerate(FAMILIES)}


@pytest.fixture
def load_tiny(tiny_dirs):
    """load_tiny(family) -> a fresh pipeline loaded through locedit.load_pipeline."""
    from locedit import load_pipeline

    return lambda family: load_pipeline(tiny_dirs[family])


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny_clip(tmp_path, tokenizer_files) -> Path:
    """A tiny random transformers CLIPModel folder (32×32 images, the real CLIP BPE vocabulary)."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path / "clip"
    CLIPModel(config).eval().save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_files / name, folder / name)
    return folder


@pytest.fixture(autouse=True)
def locedit_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test's corpus moment cache is a fresh temporary folder, never the user's ~/.cache
    (outside the test's tmp_path, which tests compare before and after to see nothing was written)."""
    folder = tmp_path_factory.mktemp("locedit_cache")
    monkeypatch.setenv("LOCEDIT_CACHE", str(folder))
    monkeypatch.delenv("LOCEDIT_NO_CACHE", raising=False)
    return folder
