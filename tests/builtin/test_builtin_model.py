"""The shipped ``builtin:shapes`` pipeline: loads offline with plain diffusers, generates fast."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors import safe_open

from locedit.builtin import BUILTIN_MODELS, builtin_path

FOLDER = BUILTIN_MODELS["shapes"]


def test_builtin_path():
    assert builtin_path("shapes") == FOLDER
    assert builtin_path("builtin:shapes") == FOLDER
    with pytest.raises(ValueError, match="shapes"):
        builtin_path("nope")


def test_folder_has_files_for_transformers_4_and_5():
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (FOLDER / "tokenizer" / name).exists(), name
    with safe_open(str(FOLDER / "text_encoder" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith("text_model.") for k in keys)  # v4 layout; v5 maps it on load
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["requires_safety_checker"] is False
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.pkl"))


def test_plain_diffusers_loads_and_generates_fast():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(FOLDER), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 16
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim == 64
    prompt = "a red circle on a striped background"
    ids = pipe.tokenizer(prompt).input_ids
    assert len(ids) == 9  # one token per word + BOS/EOS
    best = float("inf")
    for _ in range(3):  # CPU time of this (single-threaded) process: robust to other load on the machine
        t0 = time.process_time()
        out = pipe(
            prompt,
            num_inference_steps=20,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        best = min(best, time.process_time() - t0)
    assert out.images.shape == (1, 3, 32, 32)
    assert best < 1.0, f"generation took {best:.2f} s of CPU time"
