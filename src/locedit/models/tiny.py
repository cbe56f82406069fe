"""Tiny random SD1-, SD2- and SDXL-shaped pipelines built from configs, for tests and benchmarks.

They are saved to a folder and loaded back through `load_pipeline`, the same path a user's local
Stable Diffusion folder takes. Tokenization is real CLIP BPE: `clip_tokenizer_files` converts the
`bpe_simple_vocab_16e6.txt.gz` file that OpenAI CLIP and open_clip ship (MIT) into the
vocab.json/merges.txt pair that transformers' CLIPTokenizer reads; its ids match the real tokenizer's.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from locedit.errors import InvalidInputError

CLIP_VOCAB_SIZE = 49408
BOS_ID, EOS_ID = 49406, 49407


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-unicode table (GPT-2 BPE convention)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path, merges: int | None = None) -> Path:
    """Write vocab.json and merges.txt of the CLIP BPE tokenizer from open_clip's bpe .txt.gz file.

    `merges`: keep only CLIP's first `merges` merges (they are ranked by frequency), for a vocabulary
    of 512 byte tokens + `merges` + 2 specials; None keeps all 48,894 (the real 49,408-token vocabulary).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    n_merges = CLIP_VOCAB_SIZE - 512 - 2
    if merges is not None and not 0 <= merges <= n_merges:
        raise InvalidInputError(f"merges must be in 0..{n_merges} (got {merges})")
    merges = lines[1 : 1 + (n_merges if merges is None else merges)]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 512 + len(merges) + 2
    (out / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


def clip_tokenizer(tokenizer_files: str | Path, pad_token: str = "<|endoftext|>", max_length: int = 77):
    from transformers import CLIPTokenizer

    files = Path(tokenizer_files)
    return CLIPTokenizer(
        str(files / "vocab.json"), str(files / "merges.txt"), pad_token=pad_token, model_max_length=max_length
    )


@dataclass
class TinySpec:
    """Sizes of a tiny pipeline. Defaults keep one 16×16 generation in tens of milliseconds."""

    hidden: int = 32  # text-encoder width
    text_layers: int = 4  # text-encoder depth
    heads: int = 4  # text-encoder attention heads
    intermediate: int | None = None  # text-encoder MLP width; None = 2 × hidden
    context: int = 77  # tokenizer model_max_length, as in real SD
    unet_channels: tuple[int, ...] = (8, 16)  # UNet block widths
    image_size: int = 16  # pixels; latents are image_size // 2


def _text_config(spec: TinySpec, act: str, pad_id: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    kwargs = dict(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate or 2 * spec.hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.heads,
        max_position_embeddings=spec.context,
        hidden_act=act,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=pad_id,
    )
    if projection is not None:
        kwargs["projection_dim"] = projection
    return CLIPTextConfig(**kwargs)


# DDIM with Stable Diffusion's noise schedule (the tiny pipelines' scheduler).
_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def build_tiny_pipeline(family: str, tokenizer_files: str | Path, spec: TinySpec | None = None, seed: int = 0):
    """An in-memory random pipeline of `family` ("sd1", "sd2" or "sdxl") with CLIP tokenizers.

    SD1: OpenAI-CLIP-like encoder (quick_gelu, pads with <|endoftext|>). SD2: OpenCLIP-like encoder
    (gelu, pads with "!", v-prediction). SDXL: both encoders, the second with a projection, and a
    UNet with text-time conditioning.
    """
    if family not in ("sd1", "sd2", "sdxl"):
        raise InvalidInputError(f"unknown tiny family {family!r}; use sd1, sd2 or sdxl")
    spec = spec or TinySpec()
    torch.manual_seed(seed)  # the modules below are created in a fixed order from this seed
    vae = _tiny_vae(spec)
    if family == "sdxl":
        return _tiny_sdxl(spec, tokenizer_files, vae)
    return _tiny_sd(family, spec, tokenizer_files, vae)


def _tiny_vae(spec: TinySpec):
    """A two-block random AutoencoderKL (4 latent channels, images of spec.image_size pixels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=spec.image_size,
    )


def _unet_kwargs(spec: TinySpec) -> dict:
    """UNet2DConditionModel settings every family shares: one cross-attention block per width."""
    n = len(spec.unet_channels)
    return {
        "sample_size": spec.image_size // 2,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * n,
        "up_block_types": ("CrossAttnUpBlock2D",) * n,
        "block_out_channels": spec.unet_channels,
        "layers_per_block": 1,
        "norm_num_groups": 4,
    }


def _tiny_sd(family: str, spec: TinySpec, tokenizer_files: str | Path, vae):
    """SD1 or SD2: one text encoder, a UNet attending to it, DDIM (epsilon for SD1, v for SD2)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    n = len(spec.unet_channels)
    tok = clip_tokenizer(tokenizer_files, "<|endoftext|>" if family == "sd1" else "!", spec.context)
    act = "quick_gelu" if family == "sd1" else "gelu"
    text_encoder = CLIPTextModel(_text_config(spec, act, tok.pad_token_id)).eval()
    unet = UNet2DConditionModel(
        **_unet_kwargs(spec),
        cross_attention_dim=spec.hidden,
        attention_head_dim=2 if family == "sd1" else (2,) * n,
        use_linear_projection=family == "sd2",
    )
    scheduler = DDIMScheduler(**_SCHEDULER, prediction_type="epsilon" if family == "sd1" else "v_prediction")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny_sdxl(spec: TinySpec, tokenizer_files: str | Path, vae):
    """SDXL: two text encoders (the second with a projection), a UNet with text-time conditioning."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    n = len(spec.unet_channels)
    tok1 = clip_tokenizer(tokenizer_files, "<|endoftext|>", spec.context)
    tok2 = clip_tokenizer(tokenizer_files, "!", spec.context)
    te1 = CLIPTextModel(_text_config(spec, "quick_gelu", tok1.pad_token_id)).eval()
    te2 = CLIPTextModelWithProjection(_text_config(spec, "gelu", tok2.pad_token_id, projection=spec.hidden)).eval()
    time_dim = 8
    unet = UNet2DConditionModel(
        **_unet_kwargs(spec),
        cross_attention_dim=2 * spec.hidden,
        attention_head_dim=(2,) * n,
        use_linear_projection=True,
        transformer_layers_per_block=(1,) + (2,) * (n - 1),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=spec.hidden + 6 * time_dim,
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok1,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=DDIMScheduler(**_SCHEDULER),
        force_zeros_for_empty_prompt=True,
    )


def save_tiny_pipeline(family: str, tokenizer_files: str | Path, out_dir: str | Path, **kwargs) -> Path:
    """Build a tiny pipeline and save it as a diffusers folder (safetensors)."""
    from locedit.models.loading import hf_progress_bars

    pipe = build_tiny_pipeline(family, tokenizer_files, **kwargs)
    with hf_progress_bars(False):
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)
