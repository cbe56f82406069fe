"""Seeded batch generation: images of prompts as tensors, the same noise for the same seed."""

from __future__ import annotations

from collections.abc import Callable

import torch

from locedit.errors import InvalidInputError


@torch.no_grad()
def generate(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps: int = 20,
    guidance: float = 5.0,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Generate one image per (prompt, seed).

    Args:
        pipe: a Stable Diffusion pipeline.
        prompts, seeds: equal-length lists; seed i drives the initial latent of image i.
        steps: denoising steps. guidance: classifier-free guidance scale.
        batch: images per pipeline call.
        progress: optional callable(n) called after each batch with the n images it added (tqdm's
            `update` convention: increments, not a running total).

    Returns:
        (B, 3, H, W) float32 images in [0, 1], on the CPU.
    """
    if len(prompts) != len(seeds):
        raise InvalidInputError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i : i + batch]]
        images = pipe(
            prompts[i : i + batch],
            generator=gens,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
        ).images
        out.append(images.float().cpu().clamp(0, 1))
        if progress is not None:
            progress(images.shape[0])
    return torch.cat(out)
