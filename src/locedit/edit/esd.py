"""ESD (Erased Stable Diffusion; Gandikota et al., ICCV 2023): fine-tune the UNet so that its
prediction for the concept follows the frozen original's negatively guided one.

At each step a latent x_t is drawn by partially denoising fresh noise with the model being edited,
under the concept prompt c (k DDIM steps of `sample_steps`, k uniform, guidance `start_guidance`),
and the edited UNet θ is trained at t = the k-th DDIM timestep towards

    ε_θ(x_t, c, t)  ←  ε*(x_t, t) − η [ε*(x_t, c, t) − ε*(x_t, t)]          (MSE)

where ε* is the frozen original and ε*(x_t, t) its unconditional prediction (the pipeline's
classifier-free-guidance negative). Variants:
- "x" (ESD-x): the cross-attention (attn2) projections to_q/to_k/to_v/to_out; the paper's choice for
  erasing a concept named in the prompt (an artist's style) while sparing others.
- "u" (ESD-u): every Linear/Conv2d of the UNet outside cross-attention; the paper's choice for
  concepts that should go whatever the prompt (nudity).

Notes on the reference code (rohitgandikota/erasing): its CompVis script draws x_t with the model
being edited, as here, but then trains at the DDPM timestep of index k counted from t = 0 while the
latent has been denoised k steps from t = T; its diffusers script trains at the DDIM timestep the
latent actually has (as here) but draws x_t with the frozen model. Neither is reproduced exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from locedit.edit.edit import Edit
from locedit.edit.unet_tuning import (
    SnapshotHook,
    check_training,
    ddim_scheduler,
    denoise,
    encode,
    latent_size,
    loss_summary,
    optimise,
    parameter_names,
    predict,
    settings_dict,
    trainable_copy,
    unet_edit,
)
from locedit.errors import InvalidInputError
from locedit.options import is_int, is_number, option, require

ESD_VARIANTS = ("x", "u")


@dataclass
class ESDSettings:
    """Hyper-parameters of ESD. Defaults are the paper's (Sec. 4 / appendix) unless said otherwise."""

    # Optimisation steps (one latent each). The paper trains 1000 iterations.
    steps: int = option(1000, parse=int, metavar="N", help="training steps of the fine-tuning methods")
    # Adam learning rate. The paper's 1e-5 (its later diffusers script uses 5e-5 with 200 steps).
    lr: float = option(1e-5, parse=float, help="learning rate of the fine-tuning methods")
    # η, the negative-guidance scale of the target. The paper's 1.0 (the later script uses 2.0).
    negative_guidance: float = 1.0
    # DDIM steps of the partial denoising that draws x_t; k is uniform in [0, sample_steps). Paper: 50.
    sample_steps: int = 50
    # Classifier-free guidance of that partial denoising (the reference's start_guidance: 3).
    start_guidance: float = 3.0
    # Latents per step. The paper's 1.
    batch: int = 1
    # Side of the square training latent; None: the UNet's sample_size (64 = 512 px for SD1, as the paper).
    latent_size: int | None = None
    # Train the biases of the chosen modules too. None: ESD-u does (as the reference code), ESD-x does
    # not, so an ESD-x edit changes only linear weights and exports exactly as a LoRA (the reference
    # also trains attn2's to_out bias, one (d,) vector per block).
    biases: bool | None = None
    # Seed of every random draw (k, the noise); the same seed gives the same edit on the same device.
    seed: int = option(0, parse=int, help="seed of the fine-tuning methods' random draws")

    def __post_init__(self):
        check_training(self)
        require(self, "negative_guidance", is_number(self.negative_guidance), "a number")
        require(self, "sample_steps", is_int(self.sample_steps, 1), "a positive integer")
        require(self, "start_guidance", is_number(self.start_guidance), "a number")
        require(self, "batch", is_int(self.batch, 1), "a positive integer")


def esd_parameter_names(unet: torch.nn.Module, variant: str, biases: bool | None = None) -> list[str]:
    """Canonical names of the UNet parameters ESD-`variant` trains (see the module docstring)."""
    if variant not in ESD_VARIANTS:
        raise InvalidInputError(f"unknown ESD variant {variant!r}; use 'x' (cross-attention) or 'u' (the rest)")
    with_bias = (variant == "u") if biases is None else biases
    kinds = (torch.nn.Linear,) if variant == "x" else (torch.nn.Linear, torch.nn.Conv2d)
    modules = {path for path, m in unet.named_modules() if isinstance(m, kinds)}

    def include(path: str, param: str) -> bool:
        if path not in modules or (param == "bias" and not with_bias):
            return False
        in_cross = ".attn2." in f".{path}."
        return in_cross if variant == "x" else not in_cross

    return parameter_names(unet, include)


def esd(
    pipe,
    concept: str,
    variant: str = "x",
    settings: ESDSettings | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    snapshots: Sequence[int] = (),
    on_snapshot: Callable[[int, Edit], bool | None] | None = None,
) -> Edit:
    """Erase `concept` from the UNet with ESD-`variant` ("x" or "u"); `pipe` is left untouched.

    Args:
        pipe: an SD1/SD2/SDXL diffusers pipeline; training runs on its device, in float32.
        concept: the prompt to erase, e.g. "van gogh".
        steps, lr, seed: override the fields of `settings` (see ESDSettings).
        progress: show a progress bar over the training steps.
        snapshots, on_snapshot: on_snapshot(k, edit) receives, for every k in `snapshots`, the Edit
            that a run of k steps returns (the same tensors; one training run serves a sweep of steps).
            When it returns True, training ends at k and the Edit of k steps is returned.

    Returns:
        An Edit of the trained UNet tensors that changed (in the pipeline's dtype), with meta
        method "esd-x"/"esd-u", pairs [[concept, None]] (a removal), the settings, the fingerprint,
        seconds, fit_captions and stats: the loss of every step and the means of its first/last tenth.
    """
    cfg = replace(
        settings or ESDSettings(), **{k: v for k, v in dict(steps=steps, lr=lr, seed=seed).items() if v is not None}
    )
    concept = concept.strip() if isinstance(concept, str) else ""
    if not concept:
        raise InvalidInputError("ESD needs a non-empty concept prompt to erase, e.g. 'van gogh'")
    start = time.perf_counter()
    names = esd_parameter_names(pipe.unet, variant, cfg.biases)
    side = latent_size(pipe, cfg.latent_size)
    device = pipe.unet.device
    frozen = pipe.unet
    trained, params = trainable_copy(frozen, names)
    cond, uncond = encode(pipe, [concept] * cfg.batch, side)
    scheduler = ddim_scheduler(pipe, cfg.sample_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch, frozen.config.in_channels, side, side)

    def loss_fn(step: int) -> torch.Tensor:
        k = int(torch.randint(cfg.sample_steps, (1,), generator=gen))
        noise = torch.randn(shape, generator=gen).to(device) * scheduler.init_noise_sigma
        x = denoise(trained, scheduler, noise, cond, uncond, cfg.start_guidance, k)
        t = scheduler.timesteps[k].expand(cfg.batch).to(device)
        with torch.no_grad():
            e_uncond = predict(frozen, x, t, uncond)
            e_cond = predict(frozen, x, t, cond)
            target = e_uncond - cfg.negative_guidance * (e_cond - e_uncond)
        return torch.nn.functional.mse_loss(predict(trained, x, t, cond), target)

    def meta(losses: list[float]) -> dict:
        return {
            "method": f"esd-{variant}",
            "pairs": [[concept, None]],
            "settings": settings_dict(replace(cfg, steps=len(losses))),
            "fit_captions": [concept],
            "stats": {**loss_summary(losses), "trained_tensors": len(names)},
        }

    hook = SnapshotHook(pipe, trained, names, meta, start, snapshots, on_snapshot)
    losses = optimise(params, loss_fn, cfg.steps, cfg.lr, progress=progress, desc=f"esd-{variant}", on_step=hook)
    return unet_edit(pipe, trained, names, meta(losses), start + hook.overhead)
