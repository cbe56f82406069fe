"""Model adapter: offline loading of SD1/SD2/SDXL folders, family detection, layer templates, errors."""

from __future__ import annotations

import json

import pytest
import torch

from locedit.errors import InvalidInputError
from locedit.models import ModelNotFoundError, UnsupportedModelError, detect_family, load_pipeline, text_encoders


def test_families_detected_from_saved_folders(load_tiny, family):
    pipe = load_tiny(family)
    assert detect_family(pipe).name == family
    handles = text_encoders(pipe)
    assert len(handles) == (2 if family == "sdxl" else 1)
    for h in handles:
        assert isinstance(h.module("attn_out", 0), torch.nn.Linear)
        assert h.context_length == 77


def test_text_encoder_kind_is_read_from_its_config():
    from transformers import CLIPTextConfig

    from locedit.models.families import describe_text_encoder

    def kind(layers: int, width: int, vocab: int) -> str:
        return describe_text_encoder(
            CLIPTextConfig(num_hidden_layers=layers, hidden_size=width, vocab_size=vocab, intermediate_size=4 * width)
        )

    assert kind(12, 768, 49408) == "CLIP ViT-L/14 text encoder (OpenAI CLIP)"
    assert kind(23, 1024, 49408) == "OpenCLIP ViT-H/14 text encoder"
    assert kind(32, 1280, 49408) == "OpenCLIP ViT-bigG/14 text encoder"
    assert kind(4, 64, 1000) == "CLIP-architecture text encoder, vocabulary 1,000"
    assert kind(12, 768, 1000).startswith("CLIP-architecture")  # ViT-L/14's depth and width, another vocabulary


def test_tiny_encoders_are_not_called_released_ones(load_tiny, family):
    for handle in text_encoders(load_tiny(family)):
        config = handle.encoder.config
        assert "ViT" not in handle.kind
        assert handle.kind == f"CLIP-architecture text encoder, vocabulary {config.vocab_size:,}"


def test_sd2_pads_differently_from_sd1(load_tiny):
    sd1, sd2 = load_tiny("sd1"), load_tiny("sd2")
    ids1 = text_encoders(sd1)[0].tokenize(["a cat"])[0]
    ids2 = text_encoders(sd2)[0].tokenize(["a cat"])[0]
    assert ids1[:4].tolist() == ids2[:4].tolist() == [49406, 320, 2368, 49407]  # real CLIP ids
    assert ids1[-1].item() == 49407 and ids2[-1].item() == 0  # <|endoftext|> vs "!"


def test_in_memory_pipeline_is_accepted(tokenizer_files):
    from locedit.models.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", tokenizer_files)
    assert detect_family(pipe).name == "sd1"


def test_missing_path_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nope")


def test_not_a_pipeline_folder_error(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_unsupported_family_error(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UnsupportedModelError, match="FluxPipeline"):
        load_pipeline(tmp_path)


def test_unknown_encoder_choice(load_tiny):
    with pytest.raises(ValueError, match="choose 0"):
        text_encoders(load_tiny("sd1"), 1)
    assert [h.index for h in text_encoders(load_tiny("sdxl"))] == [0, 1]
    assert [h.name for h in text_encoders(load_tiny("sdxl"), 1)] == ["text_encoder_2"]


def test_a_builtin_model_without_weights_says_how_to_build_it(tmp_path, monkeypatch):
    from locedit.models import loading

    monkeypatch.setitem(loading.BUILTIN_MODELS, "scenes", tmp_path / "scenes")
    with pytest.raises(loading.ModelNotFoundError, match="--model scenes"):
        loading.builtin_path("builtin:scenes")
    with pytest.raises(InvalidInputError, match="available: scenes, shapes"):
        loading.builtin_path("builtin:nope")
