"""Training recipe of the built-in models (``builtin:shapes``, ``builtin:scenes``), the way Stable Diffusion was built.

Stages (each deterministic, seeded, resumable from atomic safetensors + JSON checkpoints):
  vae        AutoencoderKL, world images -> 4-channel latents (MSE + small KL);
  vision     (scenes) supervised pre-training of the ViT image tower on the world's attribute labels, which
             the clip stage then locks (LiT, Zhai et al. 2022); skipped when ``VisionConfig.steps`` is 0;
  clip       CLIP-style contrastive pre-training of the CLIPTextModel (pooled at the first EOS)
             against an image tower (InfoNCE): a small CNN (shapes), or a ViT so that the pair is a
             transformers CLIPModel that ships for CLIP-Score (scenes);
  classifier the shape/style/size[/position] CNN of the classifier scorer (colour is a hue rule);
  unet       UNet2DConditionModel on VAE latents, text encoder FROZEN (caption dropout 10% for
             classifier-free guidance, min-SNR-5 weighting and EMA from ``diffusers.training_utils``);
  assemble   writes the diffusers StableDiffusionPipeline folder.

Usage: ``python -m locedit.builtin.train --out DIR [--model shapes|scenes]
[--stage vae|vision|clip|unet|classifier|assemble|all] [--steps N] [--quiet] [--export FOLDER]``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from locedit.builtin.demo import model_probes_text
from locedit.builtin.tokenizer import MODEL_MAX_LENGTH, write_bpe_tokenizer, write_tokenizer
from locedit.builtin.world import Record, World, get_world
from locedit.errors import InvalidInputError
from locedit.io import atomic_dir, write_json, write_safetensors
from locedit.models.loading import parse_dtype

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel

STAGES = ("vae", "vision", "clip", "classifier", "unet", "assemble")
#: OpenAI CLIP's BPE file (open_clip ships the same), read when a model's tokenizer is CLIP's BPE cut short.
CLIP_BPE = Path(__file__).resolve().parents[3] / "tests" / "data" / "bpe_simple_vocab_16e6.txt.gz"


# ---------------------------------------------------------------- hyper-parameters
@dataclass
class VAEConfig:
    """AutoencoderKL hyper-parameters (latent 4×16×16 for a 32×32 image)."""

    steps: int = 500  # optimiser steps (the shipped VAE: 400 steps of a 700-step schedule, then resumed to 500)
    batch: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (cosine decay to 10%)
    kl_weight: float = 1e-6  # weight of the KL term against the per-pixel MSE
    block_out_channels: tuple[int, ...] = (32, 64)  # two blocks -> one 2× downsampling
    seed: int = 1  # seed of data and init
    eval_n: int = 256  # fresh images for the reconstruction metric
    latent_channels: int = 4  # channels of the latent (the UNet's in/out channels)
    # extra weight of the object's pixels in the MSE (weight 1 + object_weight on the object's coverage): the
    # object is a small part of the image, and a plain MSE spends the latent on the background texture
    object_weight: float = 0.0


@dataclass
class ClipConfig:
    """Contrastive text-encoder pre-training hyper-parameters."""

    # optimiser steps; a batch holds every seen combination once (+ entities). 400 steps gave zero-shot
    # shape retrieval 0.87 seen / 0.56 held-out and a UNet that mixed up held-out compositions; 1200: 1.00 / 0.995
    steps: int = 1200
    lr: float = 2e-3  # AdamW peak learning rate (cosine decay to 10%)
    width: int = 64  # text hidden size = projection size = UNet cross-attention width
    layers: int = 4  # transformer layers of the text encoder
    heads: int = 4  # attention heads
    seed: int = 2  # seed of data and init
    eval_n: int = 200  # fresh images per split for zero-shot retrieval
    batch: int | None = None  # None: every seen combination once (+ each entity); N: N random training pairs
    # None: one token per world word (MODEL_MAX_LENGTH context); N: CLIP's BPE cut to its first N merges
    bpe_merges: int | None = None
    context: int = MODEL_MAX_LENGTH  # tokenizer model_max_length = position embeddings (Stable Diffusion: 77)
    # tokens per caption in contrastive training; None = context. Exact for the loss: the mask is causal and the
    # pooled state sits at the first EOS, so later padding positions cannot change it
    train_context: int | None = None
    tower: str = "cnn"  # image tower: "cnn" or "vit" (a CLIPVisionModel: the pair ships as a CLIPModel)
    warmup: int = 20  # linear warm-up steps of the learning rate
    vision_layers: int = 4  # vit tower: transformer layers
    vision_patch: int = 8  # vit tower: patch size in pixels
    # vit tower after a vision stage: keep the pre-trained image transformer frozen and train the text tower and
    # the visual projection against it (LiT: "locked-image tuning"); False fine-tunes it with the text tower
    lock_image: bool = False


@dataclass
class VisionConfig:
    """Supervised pre-training of the ViT image tower (its shape: ClipConfig's width, vision_layers, heads,
    vision_patch): a linear head on the pooled state classifies every attribute (summed cross-entropies)."""

    # optimiser steps; 0 = no vision stage (the image tower trains from scratch in the clip stage). Trained
    # contrastively from scratch, the scenes ViT never separated shapes (image-side linear probe at chance after
    # 300 steps, zero-shot shape retrieval 0.65-0.76 after 2000); supervised it reaches shape 0.87 in 600 steps
    steps: int = 0
    batch: int = 128  # fresh training images per step
    lr: float = 1e-3  # AdamW peak learning rate (warm-up then cosine decay to 10%)
    warmup: int = 50  # linear warm-up steps
    # share of training images shown in greyscale (colour loss skipped on them): trained in colour on seen
    # colour-shape pairs only, 2000 steps read shapes at 0.99 on seen pairs but 0.63 on held-out pairs (colour
    # stood in for shape); with greyscale, 0.86
    grey_prob: float = 0.5
    # share of training images drawn from held-out colour-shape pairs, as for the classifier: an image tower (like
    # SD's CLIP) that has seen every object. Captions of held-out pairs stay unseen by the text encoder, and their
    # images unseen by the UNet, so held-out compositions still test the text encoder and the UNet
    held_out_share: float = 0.12
    seed: int = 5  # seed of data and init
    eval_n: int = 500  # fresh images per split (seen / held-out combinations) for the accuracy metrics


@dataclass
class ClassifierConfig:
    """Shape/style/size CNN hyper-parameters (the classifier scorer)."""

    steps: int = 600  # optimiser steps
    batch: int = 64  # images per step
    lr: float = 2e-3  # AdamW peak learning rate (cosine decay to 10%)
    seed: int = 3  # seed of data and init
    eval_n: int = 500  # fresh images for the accuracy metrics


@dataclass
class UNetConfig:
    """Latent-diffusion UNet hyper-parameters."""

    steps: int = 3000  # optimiser steps; meets every quality target of MODEL_CARD.md
    batch: int = 48  # image–caption pairs per step
    lr: float = 1e-3  # AdamW peak learning rate (warm-up then cosine decay to 10%)
    warmup: int = 100  # linear warm-up steps
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 16×16 -> 8×8 -> 4×4 latents
    caption_dropout: float = 0.1  # share of empty captions (classifier-free guidance)
    min_snr_gamma: float = 5.0  # min-SNR loss weighting, gamma
    # EMA decay cap: diffusers' EMAModel without warm-up copies the weights at update 1, then uses decay
    # min(ema_decay, k / (9 + k)) at update k
    ema_decay: float = 0.999
    pool_size: int = 16384  # training images, VAE-encoded once (each seen ~9× with fresh noise/caption)
    seed: int = 4  # seed of data and init


@dataclass
class TrainConfig:
    """All stages' hyper-parameters."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    checkpoint_every: int = 100  # steps between checkpoints
    world: str = "shapes"  # the world the model is trained on (locedit.builtin.world.WORLDS)
    # dtype the UNet and VAE weights are stored in by assemble; diffusers' from_pretrained loads float16 files as
    # float32 unless told a dtype, so "float16" halves their size on disk at no cost in use
    storage_dtype: str = "float32"


def scenes_config() -> TrainConfig:
    """The recipe of ``builtin:scenes``: 48×48 scenes, an SD-shaped text side (12-layer CLIP text encoder,
    CLIP BPE, context 77) and a ViT tower whose CLIPModel ships for CLIP-Score.

    Budget (issue 10): shipped weights ≤ 40 MB, each stage ≤ 90 minutes on a 2-core CPU. The text encoder is
    stored twice (pipeline, float32, 16.0 MB; CLIP folder, float16 with its ViT, 9.7 MB), so the vocabulary is
    CLIP's BPE cut to its first 12,000 merges (12,514 tokens × 128 = 1.6M parameters) rather than all 49,408
    (6.3M, twice). With the VAE (0.95M parameters, 1.9 MB in float16), UNet (3.8M, 7.6 MB in float16) and
    classifier (2.1 MB): 37.3 MB.
    """
    return TrainConfig(
        world="scenes",
        # 48×48 -> 8×12×12 latents; object pixels weighted ×10: with a plain MSE and 4 channels (800 steps) the
        # texture survived but shapes blurred (classifier on reconstructions: shape 0.82, size 0.89)
        vae=VAEConfig(steps=1500, block_out_channels=(32, 64, 64), latent_channels=8, object_weight=9.0),
        # the text tower learns against the vision stage's locked ViT: 300 steps of that gave zero-shot shape
        # retrieval 1.00 on seen captions, where 2000 steps of the from-scratch pair gave 0.75
        clip=ClipConfig(
            steps=1000,
            lr=5e-4,
            warmup=100,
            width=128,
            layers=12,
            heads=4,
            batch=256,
            bpe_merges=12000,
            context=77,
            train_context=32,
            tower="vit",
            vision_layers=4,
            vision_patch=8,
            lock_image=True,
        ),
        vision=VisionConfig(steps=2000),
        classifier=ClassifierConfig(steps=1200),
        # (32, 64, 64) for 6000 steps drew blobs of the right colour and place (seen: shape 0.30, style 0.86, size
        # 0.72). This UNet has 2.5× the parameters (3.8M) and ships in float16 (diffusers loads it as float32); at
        # step 3500 of 8000 (n = 64, seen): style 1.00 but shape still 0.25, so capacity is not what limits shape
        # (the text encoder under-encodes shape: MODEL_CARD.md)
        unet=UNetConfig(steps=8000, pool_size=32768, block_out_channels=(64, 96, 96)),
        storage_dtype="float16",
    )


def train_config(model: str) -> TrainConfig:
    """The default recipe of the built-in model ``model`` ("shapes" or "scenes")."""
    if model == "shapes":
        return TrainConfig()
    if model == "scenes":
        return scenes_config()
    raise InvalidInputError(f"unknown built-in model {model!r}; the recipe knows shapes and scenes")


# ---------------------------------------------------------------- checkpoints
_PT = {"format": "pt"}  # safetensors metadata transformers and diffusers write (and transformers checks on load)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten an Adam-type optimiser state to named tensors."""
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of _optimizer_tensors (param groups come from the live optimiser)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


class Checkpoint:
    """A stage's resumable state: ``<dir>/<stage>.ckpt.safetensors`` (weights, EMA shadow weights, optimiser)
    + ``<dir>/<stage>.ckpt.json`` (step, EMA counters, metrics). Never pickle.

    `modules` maps a key prefix to a module (its state dict) or to a diffusers ``EMAModel``: its shadow
    weights are stored as ``<prefix>/<index>`` tensors, the rest of its state dict (optimization_step, decay
    settings) under ``<prefix>`` in the JSON.
    """

    def __init__(self, out: Path, stage: str):
        self.tensors_path = out / f"{stage}.ckpt.safetensors"
        self.state_path = out / f"{stage}.ckpt.json"

    def exists(self) -> bool:
        return self.state_path.exists() and self.tensors_path.exists()

    def save(
        self, step: int, modules: dict[str, nn.Module | EMAModel], opt: torch.optim.Optimizer, extra: dict
    ) -> None:
        tensors, state = {}, {"step": step, **extra}
        for prefix, module in modules.items():
            if isinstance(module, nn.Module):
                tensors.update({f"{prefix}/{k}": v for k, v in module.state_dict().items()})
            else:
                ema = module.state_dict()
                tensors.update({f"{prefix}/{i}": v for i, v in enumerate(ema.pop("shadow_params"))})
                state[prefix] = ema
        tensors.update({f"optim/{k}": v for k, v in _optimizer_tensors(opt).items()})
        write_safetensors(self.tensors_path, tensors, _PT)
        write_json(self.state_path, state)  # written last: marks the pair valid

    def load(self, modules: dict[str, nn.Module | EMAModel], opt: torch.optim.Optimizer) -> dict:
        tensors = load_file(str(self.tensors_path))
        state = json.loads(self.state_path.read_text())
        for prefix, module in modules.items():
            sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
            if isinstance(module, nn.Module):
                module.load_state_dict(sub)
            else:
                module.load_state_dict({**state[prefix], "shadow_params": [sub[str(i)] for i in range(len(sub))]})
        _load_optimizer(opt, {k[6:]: v for k, v in tensors.items() if k.startswith("optim/")})
        return state

    def step_done(
        self,
        done: int,
        total: int,
        every: int,
        modules: dict[str, nn.Module | EMAModel],
        opt: torch.optim.Optimizer,
        t0: float,
        **extra,
    ) -> None:
        """After `done` of `total` steps: save when a checkpoint is due (every `every` steps and at the end)."""
        if done % every == 0 or done == total:
            self.save(done, modules, opt, {"elapsed_s": time.time() - t0, **extra})

    def resume(self, modules: dict[str, nn.Module | EMAModel], opt: torch.optim.Optimizer) -> tuple[int, float]:
        """(first step to run, wall-clock origin) — loading the checkpoint when there is one."""
        start, elapsed = 0, 0.0
        if self.exists():
            state = self.load(modules, opt)
            start, elapsed = state["step"], state["elapsed_s"]
        return start, time.time() - elapsed


def _lr_at(step: int, total: int, peak: float, warmup: int = 0) -> float:
    """Linear warm-up then cosine decay from ``peak`` to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Per-step generators: a resumed run draws exactly the batches of an uninterrupted one."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return np.random.default_rng([seed, step]), g


def _progress(total: int, start: int, desc: str, quiet: bool) -> tqdm:
    return tqdm(total=total, initial=start, desc=desc, disable=quiet, dynamic_ncols=True)


# ---------------------------------------------------------------- model builders
def build_vae(cfg: VAEConfig, w: World):
    """A small AutoencoderKL: 3×S×S images <-> 4×(S/f)×(S/f) latents, f = 2^(blocks − 1)."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=16,
        sample_size=w.image_size,
    )


def _text_config(cfg: ClipConfig, vocab_size: int, bos_id: int, eos_id: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.width,
        intermediate_size=4 * cfg.width,
        projection_dim=cfg.width,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.context,
        hidden_act="quick_gelu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,  # != 2, so transformers pools at the first EOS (CLIP's rule)
        pad_token_id=eos_id,
    )


def build_text_encoder(cfg: ClipConfig, vocab_size: int, bos_id: int, eos_id: int):
    """A CLIPTextModel over the tokenizer's vocabulary (pooled at the first EOS token)."""
    from transformers import CLIPTextModel

    return CLIPTextModel(_text_config(cfg, vocab_size, bos_id, eos_id))


def build_clip_model(cfg: ClipConfig, w: World, vocab_size: int, bos_id: int, eos_id: int):
    """A transformers CLIPModel: the text encoder of ``build_text_encoder`` plus a small ViT over world images."""
    from transformers import CLIPConfig, CLIPModel

    text = _text_config(cfg, vocab_size, bos_id, eos_id)
    vision = _vision_config(cfg, w)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=cfg.width)
    return CLIPModel(config)


def _vision_config(cfg: ClipConfig, w: World):
    """The CLIPVisionConfig of the ViT image tower over world images."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=cfg.width,
        intermediate_size=4 * cfg.width,
        projection_dim=cfg.width,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.heads,
        image_size=w.image_size,
        patch_size=cfg.vision_patch,
        hidden_act="quick_gelu",
    )


class AttributeHead(nn.Module):
    """A linear classifier of every attribute of a world on a pooled image state: (B, width) -> logits."""

    def __init__(self, width: int, w: World):
        super().__init__()
        self.values = {a: list(getattr(w, a + "s")) for a in w.attributes}
        self.linear = nn.Linear(width, sum(len(v) for v in self.values.values()))

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """{attribute: logits (B, number of values)}."""
        chunks = self.linear(pooled).split([len(v) for v in self.values.values()], dim=1)
        return dict(zip(self.values, chunks))

    def targets(self, records: list[Record]) -> dict[str, torch.Tensor]:
        """{attribute: value indices (B,)} of ``records``."""
        return {a: torch.tensor([vals.index(r.attributes[a]) for r in records]) for a, vals in self.values.items()}


class ImageTower(nn.Module):
    """Small CNN image encoder of the contrastive pre-training: (B,3,S,S) in [-1,1] -> (B, width)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(128, 128, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(128, width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ContrastiveHeads(nn.Module):
    """CLIP's text projection and learnable temperature (log of the logit scale)."""

    def __init__(self, width: int):
        super().__init__()
        self.text_projection = nn.Linear(width, width, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class Contrastive:
    """The two towers of the contrastive stage behind one interface.

    ``cnn``: CLIPTextModel + ImageTower + ContrastiveHeads (builtin:shapes). ``vit``: one CLIPModel.
    ``modules`` names what the checkpoint stores; ``text_encoder()`` the CLIPTextModel that ships.
    """

    def __init__(self, cfg: ClipConfig, w: World, tok):
        self.cfg = cfg
        if cfg.tower == "cnn":
            text = build_text_encoder(cfg, len(tok), tok.bos_token_id, tok.eos_token_id)
            self.modules = {"text": text, "tower": ImageTower(cfg.width), "heads": ContrastiveHeads(cfg.width)}
        elif cfg.tower == "vit":
            self.modules = {"clip": build_clip_model(cfg, w, len(tok), tok.bos_token_id, tok.eos_token_id)}
        else:
            raise InvalidInputError(f"clip tower must be cnn or vit (got {cfg.tower!r})")
        self.image_locked = False  # set by load_image_tower

    def load_image_tower(self, path: Path) -> None:
        """Load the vision stage's image transformer (``vision.safetensors``); frozen when ``cfg.lock_image``."""
        if "clip" not in self.modules:
            raise InvalidInputError("a pre-trained image tower needs the vit tower (ClipConfig.tower = 'vit')")
        if not path.exists():
            raise InvalidInputError(f"{str(path)!r} is missing: run `--stage vision` before `--stage clip`")
        _vision_transformer(self.modules["clip"].vision_model).load_state_dict(load_file(str(path)))
        self.image_locked = self.cfg.lock_image

    def parameters(self) -> list[nn.Parameter]:
        """The trained parameters (without a locked image transformer's)."""
        locked = set()
        if self.image_locked:
            locked = {id(p) for p in self.modules["clip"].vision_model.parameters()}
        return [p for m in self.modules.values() for p in m.parameters() if id(p) not in locked]

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [-1,1] -> unit embeddings (B, width)."""
        if "clip" in self.modules:
            clip = self.modules["clip"]
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.image_locked):
                pooled = clip.vision_model(pixel_values=x).pooler_output
            feats = clip.visual_projection(pooled)
        else:
            feats = self.modules["tower"](x)
        return F.normalize(feats, dim=-1)

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> unit embeddings (B, width), pooled at the first EOS."""
        if "clip" in self.modules:
            clip = self.modules["clip"]
            return F.normalize(clip.text_projection(clip.text_model(input_ids=ids).pooler_output), dim=-1)
        pooled = self.modules["text"](input_ids=ids).pooler_output
        return F.normalize(self.modules["heads"].text_projection(pooled), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        owner = self.modules.get("clip") or self.modules["heads"]
        return owner.logit_scale.clamp(max=math.log(100)).exp()

    def text_encoder(self):
        """The CLIPTextModel that ships in the pipeline's text_encoder folder."""
        if "clip" not in self.modules:
            return self.modules["text"]
        from transformers import CLIPTextModel

        clip = self.modules["clip"]
        text = CLIPTextModel(clip.config.text_config)
        _text_transformer(text).load_state_dict(_text_transformer(clip.text_model).state_dict())
        return text.eval()


def _text_transformer(module: nn.Module) -> nn.Module:
    """The module holding `embeddings`/`encoder`/`final_layer_norm` of a CLIP text tower: `.text_model` under
    transformers 4.x (CLIPTextModel and CLIPModel alike), the module itself under 5.x."""
    return getattr(module, "text_model", module)


def _vision_transformer(module: nn.Module) -> nn.Module:
    """The module holding `embeddings`/`encoder`/`post_layernorm` of a CLIP image tower (a CLIPVisionModel's
    `.vision_model` under transformers 4.x, the model itself under 5.x; CLIPModel.vision_model is it)."""
    return getattr(module, "vision_model", module)


def build_unet(cfg: UNetConfig, cross_attention_dim: int, sample_size: int = 16, latent_channels: int = 4):
    """UNet2DConditionModel on 4×sample_size×sample_size latents with cross-attention to the text states."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        layers_per_block=1,
        block_out_channels=cfg.block_out_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def noise_scheduler_config() -> dict:
    """Stable Diffusion's training noise schedule (1000 steps, scaled-linear betas, epsilon)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
    }


def load_tokenizer(out: Path, cfg: ClipConfig | None = None, w: World | None = None, bpe: Path = CLIP_BPE):
    """The model's CLIPTokenizer, written once (atomically) under ``out/tokenizer``: one token per word of
    world ``w`` when ``cfg.bpe_merges`` is None, else CLIP's BPE from ``bpe`` cut to that many merges."""
    from transformers import CLIPTokenizer

    folder = out / "tokenizer"
    if not (folder / "tokenizer_config.json").exists():
        cfg, w = cfg or ClipConfig(), w or get_world("shapes")
        if cfg.bpe_merges is not None and not Path(bpe).is_file():
            raise InvalidInputError(
                f"CLIP's BPE file {str(bpe)!r} is missing; run the recipe from a locedit "
                "checkout (tests/data) or pass --bpe PATH"
            )
        with atomic_dir(folder, replace=True) as tmp:
            if cfg.bpe_merges is None:
                write_tokenizer(tmp, w.vocabulary(), cfg.context)
            else:
                write_bpe_tokenizer(tmp, bpe, cfg.bpe_merges, cfg.context)
    return CLIPTokenizer.from_pretrained(str(folder))


def tokenize(tokenizer, captions: list[str], length: int | None = None) -> torch.Tensor:
    """Token ids (B, length), padded with EOS like Stable Diffusion's pipeline; length defaults to the
    tokenizer's model_max_length."""
    length = length or tokenizer.model_max_length
    enc = tokenizer(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return enc.input_ids


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """(B,3,H,W) float in [0,1] -> torch tensor in [-1,1]."""
    return torch.from_numpy(images) * 2.0 - 1.0


def _stage_done(out: Path, stage: str) -> dict | None:
    path = out / f"{stage}.done.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------- stage: VAE
def train_vae(out: Path, cfg: VAEConfig, w: World, quiet: bool = False, checkpoint_every: int = 100) -> dict:
    """Train the AutoencoderKL; writes ``out/vae`` (diffusers) and returns metrics."""
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg, w)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = Checkpoint(out, "vae")
    start, t0 = ckpt.resume({"vae": vae}, opt)
    bar = _progress(cfg.steps, start, "vae", quiet)
    for step in range(start, cfg.steps):
        rng, gen = _step_rng(cfg.seed, step)
        records = [w.sample(rng, held_out=rng.random() < 0.1) for _ in range(cfg.batch)]
        x = to_model_range(w.render_batch(records))
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, warmup=20)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        if cfg.object_weight:
            masks = torch.from_numpy(np.stack([w.object_mask(r) for r in records]))[:, None]  # (B,1,H,W)
            fit = ((1 + cfg.object_weight * masks) * (rec - x).pow(2)).mean()
        else:  # the shapes recipe, unchanged
            fit = mse
        kl = post.kl().mean() / x[0].numel()
        loss = fit + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(mse01=f"{mse.item() / 4:.4f}")
        ckpt.step_done(step + 1, cfg.steps, checkpoint_every, {"vae": vae}, opt, t0)
    bar.close()
    vae.eval()
    metrics = evaluate_vae(vae, w, n=cfg.eval_n)
    vae.register_to_config(scaling_factor=metrics["scaling_factor"])
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    metrics["train_s"] = time.time() - t0
    write_json(out / "vae.done.json", metrics)
    return metrics


@torch.no_grad()
def evaluate_vae(vae, w: World, n: int = 256, seed: int = 12345) -> dict:
    """Reconstruction MSE in [0,1] pixel units on fresh images (all pixels, and the object's pixels alone) and
    the latent scaling factor."""
    rng = np.random.default_rng(seed)
    records = [w.sample(rng) for _ in range(n)]
    x = to_model_range(w.render_batch(records))
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.mean).sample.clamp(-1, 1)
    err = ((rec + 1) / 2 - (x + 1) / 2).pow(2)
    masks = torch.from_numpy(np.stack([w.object_mask(r) for r in records]))[:, None]
    object_mse = float((err * masks).sum() / (3 * masks.sum()))
    z = post.sample(torch.Generator().manual_seed(seed))
    return {
        "recon_mse_01": err.mean().item(),
        "recon_mse_01_object": object_mse,
        "scaling_factor": float(1.0 / z.std().item()),
    }


# ---------------------------------------------------------------- stage: vision
def train_vision(
    out: Path, cfg: VisionConfig, clip_cfg: ClipConfig, w: World, quiet: bool = False, checkpoint_every: int = 100
) -> dict:
    """Supervised pre-training of the ViT image tower; writes ``out/vision.safetensors`` (the image
    transformer's state dict, as ``CLIPModel.vision_model`` holds it) and returns accuracy metrics."""
    from transformers import CLIPVisionModel

    torch.manual_seed(cfg.seed)
    vit = _vision_transformer(CLIPVisionModel(_vision_config(clip_cfg, w)))
    head = AttributeHead(clip_cfg.width, w)
    modules = {"vision": vit, "head": head}
    opt = torch.optim.AdamW([p for m in modules.values() for p in m.parameters()], lr=cfg.lr, weight_decay=0.01)
    ckpt = Checkpoint(out, "vision")
    start, t0 = ckpt.resume(modules, opt)
    bar = _progress(cfg.steps, start, "vision", quiet)
    for step in range(start, cfg.steps):
        rng, _ = _step_rng(cfg.seed, step)
        records = [w.sample(rng, held_out=rng.random() < cfg.held_out_share) for _ in range(cfg.batch)]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, warmup=cfg.warmup)
        x = to_model_range(w.render_batch(records))
        grey = torch.from_numpy(rng.random(len(records)) < cfg.grey_prob)
        luma = (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * x).sum(1, keepdim=True).expand_as(x)
        x = torch.where(grey[:, None, None, None], luma, x)
        logits = head(vit(pixel_values=x).pooler_output)
        targets = head.targets(records)
        seen = {a: ~grey if a == "colour" else torch.ones_like(grey) for a in logits}  # colour: not on grey images
        loss = sum(F.cross_entropy(logits[a][seen[a]], targets[a][seen[a]]) for a in logits if seen[a].any())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        ckpt.step_done(step + 1, cfg.steps, checkpoint_every, modules, opt, t0)
    bar.close()
    vit.eval()
    write_safetensors(out / "vision.safetensors", vit.state_dict(), _PT)
    metrics: dict[str, float] = {}
    rng = np.random.default_rng([cfg.seed, 777])
    with torch.no_grad():
        for split in ("seen", "held_out"):
            records = [w.sample(rng, held_out=split == "held_out") for _ in range(cfg.eval_n)]
            logits = head(vit(pixel_values=to_model_range(w.render_batch(records))).pooler_output)
            for a, target in head.targets(records).items():
                metrics[f"accuracy_{split}_{a}"] = (logits[a].argmax(1) == target).float().mean().item()
    metrics["train_s"] = time.time() - t0
    write_json(out / "vision.done.json", metrics)
    return metrics


# ---------------------------------------------------------------- stage: CLIP
def _clip_batch(w: World, rng: np.random.Generator, batch: int | None) -> tuple[list[Record], list[str], list[tuple]]:
    """(records, captions, combination keys) of one contrastive batch.

    ``batch`` None: every seen combination once (random template, fresh rendering) plus each entity once;
    else ``batch`` draws of the training distribution. Captions of one combination share a key.
    """
    if batch is not None:
        pairs = [w.sample_training_pair(rng) for _ in range(batch)]
        records = [r for r, _ in pairs]
        return records, [c for _, c in pairs], [tuple(r.attributes.values()) for r in records]
    records, captions = [], []
    for combo in w.seen_combinations():
        rec = w.record(combo, seed=int(rng.integers(2**31)))
        records.append(rec)
        captions.append(w.caption(rec, w.train_templates[int(rng.integers(len(w.train_templates)))]))
    for name, base in sorted(w.entities.items()):
        rec = replace(base, entity=name, seed=int(rng.integers(2**31)))
        records.append(rec)
        captions.append(w.caption(rec, w.entity_templates[int(rng.integers(len(w.entity_templates)))]))
    return records, captions, [tuple(r.attributes.values()) for r in records]


def train_clip(
    out: Path,
    cfg: ClipConfig,
    w: World,
    quiet: bool = False,
    checkpoint_every: int = 100,
    image_tower: Path | None = None,
) -> dict:
    """Contrastive pre-training of the text encoder; writes ``out/text_encoder`` (and ``out/clip`` for a
    ViT tower) and returns metrics. ``image_tower``: the vision stage's weights, loaded before training."""
    tok = load_tokenizer(out, cfg, w)
    torch.manual_seed(cfg.seed)
    model = Contrastive(cfg, w, tok)
    if image_tower is not None:
        model.load_image_tower(image_tower)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    ckpt = Checkpoint(out, "clip")
    start, t0 = ckpt.resume(model.modules, opt)
    bar = _progress(cfg.steps, start, "clip", quiet)
    for step in range(start, cfg.steps):
        rng, _ = _step_rng(cfg.seed, step)
        records, captions, keys = _clip_batch(w, rng, cfg.batch)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, warmup=cfg.warmup)
        img = model.embed_images(to_model_range(w.render_batch(records)))
        txt = model.embed_texts(tokenize(tok, captions, cfg.train_context))
        logits = model.logit_scale() * img @ txt.T
        key_ids = torch.tensor([hash(k) for k in keys])
        target = (key_ids[:, None] == key_ids[None, :]).float()  # captions of one combination are all positives
        target = target / target.sum(dim=1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        ckpt.step_done(step + 1, cfg.steps, checkpoint_every, model.modules, opt, t0)
    bar.close()
    model.train(False)
    metrics = evaluate_clip(model, w, tok, n=cfg.eval_n, length=cfg.train_context)
    save_text_encoder(model.text_encoder(), out / "text_encoder")
    if "clip" in model.modules:
        save_clip_model(model.modules["clip"], out / "clip", out / "tokenizer")
    metrics["train_s"] = time.time() - t0
    write_json(out / "clip.done.json", metrics)
    return metrics


def save_text_encoder(text_encoder, folder: Path) -> None:
    """Save a CLIPTextModel with ``text_model.``-prefixed keys, which transformers 4.x and 5.x both load."""
    folder.mkdir(parents=True, exist_ok=True)
    text_encoder.config.save_pretrained(str(folder))
    sd = text_encoder.state_dict()
    sd = {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in sd.items()}
    write_safetensors(folder / "model.safetensors", sd, _PT)


def save_clip_model(clip, folder: Path, tokenizer_folder: Path) -> None:
    """Save the CLIPModel as a self-contained CLIP folder (float16 weights, tokenizer, image preprocessing),
    atomically. float16 halves the second copy of the text encoder in the shipped budget; locedit's CLIP
    scorer computes in float32 on CPU.

    Images go in as [0,1] pixels normalised with mean 0.5 / std 0.5, i.e. the [-1,1] range it was trained on.
    """
    import copy

    from transformers import CLIPImageProcessor

    size = clip.config.vision_config.image_size
    with atomic_dir(folder, replace=True) as tmp:
        copy.deepcopy(clip).half().save_pretrained(str(tmp), safe_serialization=True)
        for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_folder / name, tmp / name)
        CLIPImageProcessor(
            do_resize=True,
            size={"shortest_edge": size},
            do_center_crop=True,
            crop_size={"height": size, "width": size},
            do_normalize=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            do_convert_rgb=True,
        ).save_pretrained(str(tmp))


@torch.no_grad()
def evaluate_clip(model: Contrastive, w: World, tok, n: int = 200, seed: int = 777, length: int | None = None) -> dict:
    """Zero-shot retrieval accuracy per attribute: pick the caption that varies only that attribute.

    Reported on seen and held-out combinations, with an attribute (style) template and an artist template.
    """
    rng = np.random.default_rng(seed)
    values = {"shape": w.shapes, "colour": w.colours, "style": w.styles, "size": w.sizes}
    if w.positions:
        values["position"] = w.positions
    templates = {
        "attr": next(t for t in w.train_templates if "{style}" in t),
        "artist": next(t for t in w.train_templates if "{artist}" in t),
    }
    metrics: dict[str, float] = {}
    for split in ("seen", "held_out"):
        records = [w.sample(rng, held_out=split == "held_out") for _ in range(n)]
        img = model.embed_images(to_model_range(w.render_batch(records)))
        for tname, template in templates.items():
            for attr, vals in values.items():
                correct = 0
                for i, rec in enumerate(records):
                    caps = [w.caption(replace(rec, **{attr: v}), template) for v in vals]
                    txt = model.embed_texts(tokenize(tok, caps, length))
                    correct += int(vals[int((txt @ img[i]).argmax())] == rec.attributes[attr])
                metrics[f"retrieval_{split}_{tname}_{attr}"] = correct / n
    return metrics


# ---------------------------------------------------------------- stage: classifier
def train_classifier(
    out: Path, cfg: ClassifierConfig, w: World, quiet: bool = False, checkpoint_every: int = 100
) -> dict:
    """Train the CNN of the world's classifier on all combinations; writes ``out/classifier.safetensors``."""
    from locedit.builtin.classifier import ShapesClassifier, ShapesCNN, augment, heads

    torch.manual_seed(cfg.seed)
    net = ShapesCNN(w)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    ckpt = Checkpoint(out, "classifier")
    start, t0 = ckpt.resume({"net": net}, opt)
    bar = _progress(cfg.steps, start, "classifier", quiet)
    for step in range(start, cfg.steps):
        rng, gen = _step_rng(cfg.seed, step)
        records = [w.sample(rng, held_out=rng.random() < 0.12) for _ in range(cfg.batch)]
        x = augment(torch.from_numpy(w.render_batch(records)), gen)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, warmup=20)
        logits = net(x)
        loss = sum(
            F.cross_entropy(logits[attr], torch.tensor([vals.index(r.attributes[attr]) for r in records]))
            for attr, vals in heads(w).items()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        ckpt.step_done(step + 1, cfg.steps, checkpoint_every, {"net": net}, opt, t0)
    bar.close()
    net.eval()
    write_safetensors(out / "classifier.safetensors", net.state_dict(), _PT)
    clf = ShapesClassifier(net, w)
    metrics = clf.accuracy_on_world(n=cfg.eval_n, seed=4242)
    vae_dir = out / "vae"
    if (vae_dir / "config.json").exists():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(vae_dir))
        metrics.update({f"vae_{k}": v for k, v in clf.accuracy_on_world(n=cfg.eval_n, seed=4243, vae=vae).items()})
    metrics["train_s"] = time.time() - t0
    write_json(out / "classifier.done.json", metrics)
    return metrics


# ---------------------------------------------------------------- stage: UNet
def _pool_records(cfg: UNetConfig, w: World) -> list[Record]:
    """The UNet's fixed image pool: seen combinations, ~entity_prob of them entity records."""
    rng = np.random.default_rng([cfg.seed, 10**9])
    return [w.sample_training_pair(rng)[0] for _ in range(cfg.pool_size)]


def _training_caption(record: Record, w: World, rng: np.random.Generator) -> str:
    """A training caption for a pool record: an entity template for entity records, else a training template."""
    templates = w.entity_templates if record.entity else w.train_templates
    return w.caption(record, templates[int(rng.integers(len(templates)))])


@torch.no_grad()
def _latent_pool(out: Path, vae, cfg: UNetConfig, w: World) -> tuple[list[Record], torch.Tensor, torch.Tensor]:
    """(records, latent means, latent stds (N,4,h,w)) of the pool, encoded once and cached in ``out``."""
    records = _pool_records(cfg, w)
    path = out / "unet_pool.safetensors"
    if path.exists():
        t = load_file(str(path))
        if t["mean"].shape[0] == len(records):
            return records, t["mean"], t["std"]
    means, stds = [], []
    for i in range(0, len(records), 64):
        post = vae.encode(to_model_range(w.render_batch(records[i : i + 64]))).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    # contiguous like the cached file: the VAE's convolutions return channels-last tensors, on which the UNet's
    # convolutions round differently, so a run that computed the pool would not match one resumed from the cache
    mean, std = torch.cat(means).contiguous(), torch.cat(stds).contiguous()
    write_safetensors(path, {"mean": mean, "std": std}, _PT)
    return records, mean, std


def train_unet(out: Path, cfg: UNetConfig, w: World, quiet: bool = False, checkpoint_every: int = 100) -> dict:
    """Train the UNet on frozen VAE latents and frozen text states; writes ``out/unet`` (EMA)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr
    from transformers import CLIPTextModel

    tok = load_tokenizer(out)
    vae = AutoencoderKL.from_pretrained(str(out / "vae")).eval().requires_grad_(False)
    text = CLIPTextModel.from_pretrained(str(out / "text_encoder")).eval().requires_grad_(False)
    sched = DDPMScheduler(**noise_scheduler_config())
    torch.manual_seed(cfg.seed)
    latent_size = w.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(cfg, text.config.hidden_size, latent_size, vae.config.latent_channels)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=False, foreach=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    ckpt = Checkpoint(out, "unet")
    start, t0 = ckpt.resume({"unet": unet, "ema": ema}, opt)
    scale = vae.config.scaling_factor
    pool_records, pool_mean, pool_std = _latent_pool(out, vae, cfg, w)
    bar = _progress(cfg.steps, start, "unet", quiet)
    running = None
    for step in range(start, cfg.steps):
        rng, gen = _step_rng(cfg.seed, step)
        idx = rng.integers(len(pool_records), size=cfg.batch)
        captions = [_training_caption(pool_records[i], w, rng) for i in idx]
        captions = ["" if rng.random() < cfg.caption_dropout else c for c in captions]
        idx_t = torch.from_numpy(idx)
        mean, std = pool_mean[idx_t], pool_std[idx_t]
        latents = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
        with torch.no_grad():
            states = text(input_ids=tokenize(tok, captions)).last_hidden_state
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch,), generator=gen)
        noisy = sched.add_noise(latents, noise, t)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, warmup=cfg.warmup)
        pred = unet(noisy, t, encoder_hidden_states=states).sample
        snr = compute_snr(sched, t)
        weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # min-SNR-gamma for epsilon prediction
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        ckpt.step_done(step + 1, cfg.steps, checkpoint_every, {"unet": unet, "ema": ema}, opt, t0, loss=running)
    bar.close()
    ema.copy_to(unet.parameters())  # training is over: the UNet takes the EMA weights, which ship
    unet.save_pretrained(str(out / "unet"), safe_serialization=True)
    metrics = {"train_s": time.time() - t0, "final_loss_ema": running, "steps": cfg.steps, "batch": cfg.batch}
    write_json(out / "unet.done.json", metrics)
    return metrics


# ---------------------------------------------------------------- assemble
def corpus_text(w: World, n: int = 256, seed: int = 0) -> str:
    """The folder's locedit_corpus.txt: `n` captions drawn from the training distribution, which
    DIFF-QUICKFIX reads as the corpus of its covariance term and mines for key captions."""
    rng = np.random.default_rng(seed)
    header = (
        f"# Typical captions of builtin:{w.name} (a sample of its training distribution), read by locedit's\n"
        "# DIFF-QUICKFIX: captions naming the edited concept become key captions, the others form the\n"
        "# covariance corpus that keeps unedited captions in place.\n"
    )
    return header + "".join(w.sample_training_pair(rng)[1] + "\n" for _ in range(n))


def assemble(out: Path, export: Path, w: World, storage_dtype: str = "float32") -> Path:
    """Write the StableDiffusionPipeline folder ``export`` from the trained stages under ``out``, replacing
    a previous export whole, with the UNet and VAE stored in ``storage_dtype`` (the text encoder stays float32:
    transformers 5 would load a float16 one as float16). A world other than shapes also gets its classifier
    and CLIP folder inside."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    dtype = parse_dtype(storage_dtype)
    tok = load_tokenizer(out)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(str(out / "vae")).to(dtype),
        text_encoder=CLIPTextModel.from_pretrained(str(out / "text_encoder")),
        tokenizer=tok,
        unet=UNet2DConditionModel.from_pretrained(str(out / "unet")).to(dtype),
        scheduler=DPMSolverMultistepScheduler(**noise_scheduler_config(), algorithm_type="dpmsolver++"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(export, replace=True) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        save_text_encoder(pipe.text_encoder, tmp / "text_encoder")  # v4-style keys, loaded by v4 and v5
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(out / "tokenizer", tmp / "tokenizer")  # vocab.json + merges.txt for v4 and v5
        (tmp / "locedit_corpus.txt").write_text(corpus_text(w))
        (tmp / "locedit_probes.jsonl").write_text(model_probes_text(w))  # what `--probes default` traces
        if w.name != "shapes":  # the shapes classifier ships beside the package's code
            shutil.copyfile(out / "classifier.safetensors", tmp / "classifier.safetensors")
        if (out / "clip" / "config.json").exists():
            shutil.copytree(out / "clip", tmp / "clip")
    return export


# ---------------------------------------------------------------- cli
def run(out: Path, stages: list[str], config: TrainConfig, quiet: bool = False, export: Path | None = None) -> dict:
    """Run ``stages`` in order into ``out`` (skipping finished ones); returns their metrics."""
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "config.json"
    if stored.exists() and json.loads(stored.read_text()).get("world", "shapes") != config.world:
        raise InvalidInputError(f"{str(out)!r} holds a run of another model; pass its --model or a new --out")
    write_json(stored, asdict(config))
    w = get_world(config.world)
    metrics: dict[str, dict] = {}
    every = config.checkpoint_every
    for stage in stages:
        done = _stage_done(out, stage)
        if done is not None:
            metrics[stage] = done
            continue
        if stage == "vae":
            metrics[stage] = train_vae(out, config.vae, w, quiet, every)
        elif stage == "vision":
            if config.vision.steps == 0:
                metrics[stage] = {"skipped": "VisionConfig.steps is 0"}
                continue
            metrics[stage] = train_vision(out, config.vision, config.clip, w, quiet, every)
        elif stage == "clip":
            tower = out / "vision.safetensors" if config.vision.steps else None
            metrics[stage] = train_clip(out, config.clip, w, quiet, every, image_tower=tower)
        elif stage == "classifier":
            metrics[stage] = train_classifier(out, config.classifier, w, quiet, every)
        elif stage == "unet":
            metrics[stage] = train_unet(out, config.unet, w, quiet, every)
        elif stage == "assemble":
            metrics[stage] = {"folder": str(assemble(out, export or out / "pipeline", w, config.storage_dtype))}
        if not quiet:
            print(f"[{stage}] {json.dumps(metrics[stage])}", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m locedit.builtin.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint / output directory")
    parser.add_argument("--model", default="shapes", choices=("shapes", "scenes"), help="which built-in model")
    parser.add_argument("--stage", default="all", choices=(*STAGES, "all"), help="stage to run (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="override the stage's step count")
    parser.add_argument("--batch", type=int, default=None, help="override the stage's batch size")
    parser.add_argument("--export", type=Path, default=None, help="pipeline folder to assemble (default OUT/pipeline)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--quiet", action="store_true", help="no progress bar / logging")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = train_config(args.model)
    config.checkpoint_every = args.checkpoint_every
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    for name in ("vae", "vision", "clip", "classifier", "unet"):
        sub = getattr(config, name)
        if args.steps is not None and (args.stage in ("all", name)):
            sub.steps = args.steps
        if args.batch is not None and hasattr(sub, "batch") and args.stage in ("all", name):
            sub.batch = args.batch
    metrics = run(args.out, stages, config, quiet=args.quiet, export=args.export)
    if not args.quiet:
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
