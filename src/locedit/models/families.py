"""Model families (SD1.x, SD2.x, SDXL): detection and the per-family table of layer-name templates.

Every address the rest of locedit uses (the text encoder's layers, the out-projection that
DIFF-QUICKFIX edits, the token embedding that tracing corrupts) is built from the templates here,
never from string literals scattered through the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from locedit.errors import LoceditError


class UnsupportedModelError(LoceditError, ValueError):
    """The pipeline is not a family locedit knows (SD1.x, SD2.x, SDXL)."""


@dataclass(frozen=True)
class Family:
    """What locedit needs to know about one family of Stable Diffusion pipelines."""

    name: str
    # Pipeline attribute names of the text encoders and their tokenizers, in pipeline order.
    text_encoders: tuple[str, ...]
    tokenizers: tuple[str, ...]
    # Token the family's tokenizer pads with (SD1 pads with <|endoftext|>, OpenCLIP with "!").
    pad_tokens: tuple[str, ...]


SD1 = Family(
    name="sd1",
    text_encoders=("text_encoder",),
    tokenizers=("tokenizer",),
    pad_tokens=("<|endoftext|>",),
)
SD2 = Family(
    name="sd2",
    text_encoders=("text_encoder",),
    tokenizers=("tokenizer",),
    pad_tokens=("!",),
)
SDXL = Family(
    name="sdxl",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizers=("tokenizer", "tokenizer_2"),
    pad_tokens=("<|endoftext|>", "!"),
)
FAMILIES = {f.name: f for f in (SD1, SD2, SDXL)}

# The released text encoders of the families, by (layers, width, vocabulary) of their config, for `locedit
# info`. SD2's OpenCLIP ViT-H/14 ships in diffusers with its last layer dropped (23 of 24 layers).
KNOWN_TEXT_ENCODERS = {
    (12, 768, 49408): "CLIP ViT-L/14 text encoder (OpenAI CLIP)",
    (23, 1024, 49408): "OpenCLIP ViT-H/14 text encoder",
    (24, 1024, 49408): "OpenCLIP ViT-H/14 text encoder",
    (32, 1280, 49408): "OpenCLIP ViT-bigG/14 text encoder",
}


def describe_text_encoder(config) -> str:
    """What a text encoder is, from its (transformers CLIPTextConfig) sizes: the released encoder of
    KNOWN_TEXT_ENCODERS it matches, else its vocabulary size (`locedit info` prints depth and width beside it)."""
    sizes = (int(config.num_hidden_layers), int(config.hidden_size), int(config.vocab_size))
    known = KNOWN_TEXT_ENCODERS.get(sizes)
    if known:
        return known
    return f"CLIP-architecture text encoder, vocabulary {sizes[2]:,}"


# Canonical (transformers 4.x) module paths inside one CLIP text encoder. transformers 5.x drops the
# `text_model.` level for CLIPTextModel (not for CLIPTextModelWithProjection), so every path is
# resolved through `resolve_text_module`, which tries the canonical path and then the unprefixed one.
TEXT_TEMPLATES = {
    "token_embedding": "text_model.embeddings.token_embedding",
    "layers": "text_model.encoder.layers",
    "layer": "text_model.encoder.layers.{layer}",
    "self_attn": "text_model.encoder.layers.{layer}.self_attn",
    "attn_out": "text_model.encoder.layers.{layer}.self_attn.out_proj",
    "attn_v": "text_model.encoder.layers.{layer}.self_attn.v_proj",
    "layer_norm1": "text_model.encoder.layers.{layer}.layer_norm1",
    "embeddings": "text_model.embeddings",
    "mlp": "text_model.encoder.layers.{layer}.mlp",
    "final_layer_norm": "text_model.final_layer_norm",
}
_TEXT_PREFIX = "text_model."

_SUPPORTED_PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionInpaintPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
}


def text_template(kind: str, **fields: int) -> str:
    """Canonical module path of `kind` (a key of TEXT_TEMPLATES) inside a text encoder."""
    return TEXT_TEMPLATES[kind].format(**fields)


def resolve_text_module(text_encoder: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at canonical `path`, for transformers 4.x and 5.x layouts alike."""
    candidates = [path]
    if path.startswith(_TEXT_PREFIX):
        candidates.append(path[len(_TEXT_PREFIX) :])
    for candidate in candidates:
        try:
            return text_encoder.get_submodule(candidate)
        except AttributeError:
            continue
    raise UnsupportedModelError(
        f"text encoder {type(text_encoder).__name__} has no module {path!r}; "
        "locedit supports CLIP text encoders (CLIPTextModel, CLIPTextModelWithProjection)"
    )


def num_text_layers(text_encoder: torch.nn.Module) -> int:
    return len(resolve_text_module(text_encoder, TEXT_TEMPLATES["layers"]))


def detect_family(pipe) -> Family:
    """Family of a diffusers pipeline object (loaded from disk or built in memory).

    SDXL has a second text encoder. SD2 and SD1 share the pipeline class; SD2's OpenCLIP encoder
    uses the exact GELU (SD1's OpenAI CLIP uses quick_gelu) and its tokenizer pads with "!".
    """
    cls = type(pipe).__name__
    kind = _SUPPORTED_PIPELINES.get(cls)
    if kind is None and getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "unet", None) is not None:
        kind = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
    if kind is None:
        raise UnsupportedModelError(
            f"unsupported pipeline {cls}: locedit edits Stable Diffusion 1.x/2.x and SDXL pipelines "
            "(a UNet with CLIP text encoders)"
        )
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None or not hasattr(encoder, "config") or "CLIPText" not in type(encoder).__name__:
        raise UnsupportedModelError(
            f"pipeline {cls} has no CLIP text encoder (found {type(encoder).__name__}); "
            "locedit needs a CLIPTextModel as `text_encoder`"
        )
    if kind == "sdxl":
        return SDXL
    tokenizer = getattr(pipe, "tokenizer", None)
    pad = getattr(tokenizer, "pad_token", None)
    if getattr(encoder.config, "hidden_act", "quick_gelu") == "gelu" or pad == "!":
        return SD2
    return SD1
