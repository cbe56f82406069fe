"""Concept Ablation (Kumari et al., ICCV 2023), model-based variant: fine-tune the UNet so that its
prediction for a target-concept prompt c* matches the prediction for an anchor prompt c
("a photo of van gogh" → "a photo of painting") on latents of the anchor concept.

The anchor latents x_0 are generated once by the pipeline itself from the anchor prompts (the
paper generates anchor images with the pretrained model; locedit keeps the latents and skips the
VAE round trip). Each step draws anchor latents, timesteps t uniform in [0, T) and noise ε, forms
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, and minimises

    || Φ_θ(x_t, c*, t) − sg(Φ(x_t, c, t)) ||²                                   (MSE)

where Φ(·, c, ·) is, as in the paper and its code, the model being trained under stop-gradient
("current"), or the frozen original ("frozen"). Variants (the reference's --parameter_group):
- "kv": the cross-attention key and value projections (attn2.to_k, attn2.to_v); the default.
- "full": every UNet parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from locedit.edit.edit import Edit
from locedit.edit.quickfix import DEFAULT_TEMPLATES, check_templates, read_templates
from locedit.edit.targets import cross_attention_projections, unet_name
from locedit.edit.unet_tuning import (
    SnapshotHook,
    check_training,
    ddpm_scheduler,
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
from locedit.options import is_int, is_number, option, require, require_choice

ABLATE_VARIANTS = ("kv", "full")
ANCHOR_TARGETS = ("current", "frozen")


@dataclass
class AblateSettings:
    """Hyper-parameters of Concept Ablation. Defaults follow the paper's style/instance runs."""

    # Optimisation steps. The paper: 100 (its diffusers README: 100 on 2 GPUs, 200 on one).
    steps: int = option(100, parse=int, metavar="N", help="training steps of the fine-tuning methods")
    # AdamW learning rate: the paper's 2e-6 per image scaled by the batch of 8 (its --scale_lr).
    lr: float = option(1.6e-5, parse=float, help="learning rate of the fine-tuning methods")
    # Anchor latents per step. The paper's batch: 4 per GPU × 2 GPUs.
    batch: int = 8
    # AdamW weight decay: the diffusers training scripts' default the reference uses.
    weight_decay: float = 1e-2
    # Gradient clipping (global norm): the reference's max_grad_norm.
    max_grad_norm: float = 1.0
    # Anchor latents generated before training. The reference's default 200 (the paper: 1000).
    anchor_images: int = 200
    # Denoising steps and guidance of that generation: the pipeline's usual 50 and 7.5 (the reference
    # generates with the pipeline's defaults). The pipeline's own scheduler is used.
    anchor_steps: int = 50
    anchor_guidance: float = 7.5
    # Caption templates, "{}" marking the concept: anchor prompt t(anchor) pairs with target prompt
    # t(concept). The paper uses 200 ChatGPT captions of the anchor; these are locedit's quickfix templates.
    templates: tuple[str, ...] = option(
        DEFAULT_TEMPLATES,
        parse=read_templates,
        metavar="FILE",
        help="caption templates file, one per line, '{}' marks the concept",
        shown=f"the {len(DEFAULT_TEMPLATES)} built-in templates",
    )
    # Whose anchor prediction is the target: "current" (the model being trained, stop-gradient; the
    # paper's model-based loss and its code) or "frozen" (the original model, which never moves).
    anchor_target: str = "current"
    # Side of the square latent; None: the UNet's sample_size (64 = 512 px for SD1, as the paper).
    latent_size: int | None = None
    # Seed of every random draw (anchor generation, batches, t, ε).
    seed: int = option(0, parse=int, help="seed of the fine-tuning methods' random draws")

    def __post_init__(self):
        check_training(self)
        for name in ("batch", "anchor_images", "anchor_steps"):
            require(self, name, is_int(getattr(self, name), 1), "a positive integer")
        require(self, "weight_decay", is_number(self.weight_decay) and self.weight_decay >= 0, ">= 0")
        require(
            self,
            "max_grad_norm",
            self.max_grad_norm is None or (is_number(self.max_grad_norm) and self.max_grad_norm > 0),
            "> 0",
            "None turns clipping off",
        )
        require(self, "anchor_guidance", is_number(self.anchor_guidance), "a number")
        self.templates = check_templates(self.templates)
        require_choice(self, "anchor_target", ANCHOR_TARGETS)


def ablate_parameter_names(unet: torch.nn.Module, variant: str) -> list[str]:
    """Canonical names of the UNet parameters Concept Ablation-`variant` trains."""
    if variant not in ABLATE_VARIANTS:
        raise InvalidInputError(f"unknown ablation variant {variant!r}; use 'kv' (cross-attention K/V) or 'full'")
    if variant == "full":
        return parameter_names(unet, lambda path, param: True)
    paths = cross_attention_projections(unet, ("to_k", "to_v"))
    names = [unet_name(p, param) for p in paths for param, _ in unet.get_submodule(p).named_parameters(recurse=False)]
    if not names:
        raise InvalidInputError("this UNet has no cross-attention (attn2) to_k/to_v projections to train")
    return names


@torch.no_grad()
def anchor_latents(
    pipe, prompts: list[str], n: int, side: int, steps: int, guidance: float, batch: int, seed: int, progress: bool
) -> tuple[torch.Tensor, list[int]]:
    """n latents (n, C, side, side) float32 generated by `pipe` from `prompts` (cycled), and the prompt
    index of each. Uses the pipeline's own scheduler; the pipeline's progress bar is off meanwhile."""
    from tqdm.auto import tqdm

    which = [i % len(prompts) for i in range(n)]
    pixels = side * pipe.vae_scale_factor
    saved = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    out = []
    try:
        with tqdm(total=n, desc="anchor latents", unit="latent", disable=not progress, dynamic_ncols=True) as bar:
            for i in range(0, n, batch):
                rows = which[i : i + batch]
                gens = [torch.Generator().manual_seed(seed * 1_000_003 + i + j) for j in range(len(rows))]
                latents = pipe(
                    [prompts[r] for r in rows],
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    height=pixels,
                    width=pixels,
                    generator=gens,
                    output_type="latent",
                ).images
                out.append(latents.float())
                bar.update(len(rows))
    finally:
        pipe._progress_bar_config = saved
    return torch.cat(out), which


def ablate(
    pipe,
    concept: str,
    anchor: str,
    variant: str = "kv",
    settings: AblateSettings | None = None,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    snapshots: Sequence[int] = (),
    on_snapshot: Callable[[int, Edit], bool | None] | None = None,
) -> Edit:
    """Ablate `concept` onto `anchor` (e.g. "van gogh" → "painting") with Concept Ablation-`variant`.

    `pipe` is left untouched. steps, lr, seed override the fields of `settings` (see AblateSettings);
    `progress` shows bars over the anchor generation and the training steps. on_snapshot(k, edit)
    receives, for every k in `snapshots`, the Edit that a run of k steps returns; when it returns
    True, training ends at k and the Edit of k steps is returned.

    Returns:
        An Edit of the trained UNet tensors that changed, with meta method "ablate-kv"/"ablate-full",
        pairs [[concept, anchor]], the settings, fingerprint, seconds, fit_captions (target and
        anchor prompts) and stats (every step's loss, the means of its first/last tenth).
    """
    cfg = replace(
        settings or AblateSettings(), **{k: v for k, v in dict(steps=steps, lr=lr, seed=seed).items() if v is not None}
    )
    concept = concept.strip() if isinstance(concept, str) else ""
    anchor = anchor.strip() if isinstance(anchor, str) else ""
    if not concept or not anchor:
        raise InvalidInputError("Concept Ablation needs a concept and an anchor concept, e.g. 'van gogh' -> 'painting'")
    templates = cfg.templates
    start = time.perf_counter()
    names = ablate_parameter_names(pipe.unet, variant)
    side = latent_size(pipe, cfg.latent_size)
    device = pipe.unet.device
    anchor_prompts = [t.format(anchor) for t in templates]
    target_prompts = [t.format(concept) for t in templates]

    x0, which = anchor_latents(
        pipe,
        anchor_prompts,
        cfg.anchor_images,
        side,
        cfg.anchor_steps,
        cfg.anchor_guidance,
        cfg.batch,
        cfg.seed,
        progress,
    )
    x0 = x0.to(device)
    anchor_cond, _ = encode(pipe, anchor_prompts, side)
    target_cond, _ = encode(pipe, target_prompts, side)
    noise_scheduler = ddpm_scheduler(pipe)
    steps_total = noise_scheduler.config.num_train_timesteps
    trained, params = trainable_copy(pipe.unet, names)
    reference = trained if cfg.anchor_target == "current" else pipe.unet
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the generation used `seed`; training draws its own stream

    def loss_fn(step: int) -> torch.Tensor:
        rows = torch.randint(len(x0), (cfg.batch,), generator=gen)
        t = torch.randint(steps_total, (cfg.batch,), generator=gen)
        eps = torch.randn((cfg.batch, *x0.shape[1:]), generator=gen).to(device)
        prompt_rows = [which[int(r)] for r in rows]
        t = t.to(device)
        x_t = noise_scheduler.add_noise(x0[rows.to(device)], eps, t)
        with torch.no_grad():
            goal = predict(reference, x_t, t, anchor_cond.select(prompt_rows))
        return torch.nn.functional.mse_loss(predict(trained, x_t, t, target_cond.select(prompt_rows)), goal)

    def meta(losses: list[float]) -> dict:
        return {
            "method": f"ablate-{variant}",
            "pairs": [[concept, anchor]],
            "settings": settings_dict(replace(cfg, steps=len(losses))),
            "fit_captions": sorted(set(anchor_prompts + target_prompts)),
            "stats": {**loss_summary(losses), "trained_tensors": len(names)},
        }

    hook = SnapshotHook(pipe, trained, names, meta, start, snapshots, on_snapshot)
    losses = optimise(
        params,
        loss_fn,
        cfg.steps,
        cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        progress=progress,
        desc=f"ablate-{variant}",
        on_step=hook,
    )
    return unet_edit(pipe, trained, names, meta(losses), start + hook.overhead)
