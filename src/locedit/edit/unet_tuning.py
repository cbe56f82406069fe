"""Fine-tuning machinery shared by the UNet baselines (ESD, Concept Ablation): prompt conditioning as
the pipeline computes it, UNet calls, a float32 trainable copy of the UNet, partial DDIM denoising,
the optimisation loop with its loss curve, and the Edit that the trained tensors become.

The pipeline itself is never changed: training runs on a copy, and the result is an Edit of the
tensors that moved (`edit.apply(pipe)` writes them).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from locedit.edit.edit import Edit
from locedit.edit.targets import UNET, fingerprint_tensors, unet_name
from locedit.errors import InvalidInputError
from locedit.models import detect_family
from locedit.options import is_int, is_number, require


@dataclass
class Conditioning:
    """UNet text conditioning of B prompts.

    embeds: (B, T, D) prompt embeddings as the pipeline computes them (D = cross-attention dim).
    pooled: SDXL only, (B, D') pooled embeddings of the second text encoder.
    time_ids: SDXL only, (B, 6) original size, crop corner and target size in pixels.
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def select(self, index: torch.Tensor | list[int]) -> Conditioning:
        """Rows `index` (with repeats) of every field."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Conditioning(pick(self.embeds), pick(self.pooled), pick(self.time_ids))

    @staticmethod
    def cat(parts: Iterable[Conditioning]) -> Conditioning:
        parts = list(parts)
        join = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
        return Conditioning(
            join([p.embeds for p in parts]), join([p.pooled for p in parts]), join([p.time_ids for p in parts])
        )

    def unet_kwargs(self, dtype: torch.dtype) -> dict:
        kwargs = {"encoder_hidden_states": self.embeds.to(dtype)}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled.to(dtype), "time_ids": self.time_ids.to(dtype)}
        return kwargs


def latent_size(pipe, size: int | None = None) -> int:
    """Side of the square latent the baselines train on: `size` (checked by the settings), or the
    UNet's configured sample size."""
    return int(size if size is not None else pipe.unet.config.sample_size)


@torch.no_grad()
def encode(pipe, prompts: list[str], side: int) -> tuple[Conditioning, Conditioning]:
    """(conditional, unconditional) conditioning of `prompts`, computed by the pipeline's encode_prompt.

    The unconditional half is what the pipeline uses for classifier-free guidance (the empty prompt,
    or zeros for SDXL with force_zeros_for_empty_prompt). `side` is the latent side, used for SDXL's
    size conditioning (pixels = side × vae_scale_factor).
    """
    device = pipe.unet.device
    out = pipe.encode_prompt(
        prompt=list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    if detect_family(pipe).name != "sdxl":
        cond, uncond = out[0], out[1]
        return Conditioning(cond), Conditioning(uncond)
    cond, uncond, pooled, uncond_pooled = out
    pixels = side * pipe.vae_scale_factor
    time_ids = torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]], dtype=torch.float32, device=device)
    time_ids = time_ids.expand(len(prompts), -1)
    return Conditioning(cond, pooled, time_ids), Conditioning(uncond, uncond_pooled, time_ids)


def predict(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """UNet output (the scheduler's prediction type: ε or v) for latents x (B, C, h, w) at timesteps
    t (B,), in float32; inputs are cast to the UNet's dtype."""
    dtype = unet.dtype
    out = unet(x.to(dtype), t, **cond.unet_kwargs(dtype), return_dict=False)[0]
    return out.float()


def ddim_scheduler(pipe, steps: int):
    """A DDIM scheduler with the pipeline's noise schedule and prediction type, set to `steps` steps."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler


def ddpm_scheduler(pipe):
    """A DDPM scheduler with the pipeline's noise schedule (for add_noise and the training timesteps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


@torch.no_grad()
def denoise(
    unet, scheduler, x: torch.Tensor, cond: Conditioning, uncond: Conditioning, guidance: float, steps: int
) -> torch.Tensor:
    """Run the first `steps` DDIM steps of `scheduler` from the noise x (B, C, h, w) with
    classifier-free guidance `guidance`; returns the latent at scheduler.timesteps[steps] (float32)."""
    both = Conditioning.cat([uncond, cond])
    for t in scheduler.timesteps[:steps]:
        ts = t.expand(2 * x.shape[0]).to(x.device)
        out_uncond, out_cond = predict(unet, torch.cat([x, x]), ts, both).chunk(2)
        out = out_uncond + guidance * (out_cond - out_uncond)
        x = scheduler.step(out, t, x).prev_sample.float()
    return x


# ------------------------------------------------------------------------------- parameters
def check_training(settings) -> None:
    """The checks of the fields every fine-tuning settings class has (steps, lr, seed, latent_size);
    called by ESDSettings / AblateSettings.__post_init__."""
    require(settings, "steps", is_int(settings.steps, 1), "a positive integer")
    require(settings, "lr", is_number(settings.lr) and settings.lr > 0, "a number > 0")
    require(settings, "seed", is_int(settings.seed, 0), "a non-negative integer")
    require(
        settings,
        "latent_size",
        settings.latent_size is None or is_int(settings.latent_size, 1),
        "a positive integer",
        "leave it None for the UNet's sample size",
    )


def parameter_names(unet: torch.nn.Module, include: Callable[[str, str], bool]) -> list[str]:
    """Canonical names "unet.<path>.<param>" of the parameters for which include(module path, param) holds."""
    names = []
    for path, module in unet.named_modules():
        for param, _ in module.named_parameters(recurse=False):
            if include(path, param):
                names.append(unet_name(path, param))
    if not names:
        raise InvalidInputError("no UNet parameter matches the chosen variant; is this a Stable Diffusion UNet?")
    return names


def trainable_copy(unet: torch.nn.Module, names: list[str]) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """A float32 copy of `unet` on its device whose parameters at canonical `names` require grad
    (every other parameter is frozen); returns (copy, those parameters in the order of `names`)."""
    trained = copy.deepcopy(unet)
    torch.nn.Module.to(trained, torch.float32)  # torch's own .to: diffusers' override warns about fp32-kept modules
    trained.requires_grad_(False)
    trained.eval()  # no dropout: the UNet's prediction is deterministic, as the frozen original's
    params = dict(trained.named_parameters())
    chosen = [params[n.removeprefix(f"{UNET}.")] for n in names]
    for p in chosen:
        p.requires_grad_(True)
    return trained, chosen


def optimise(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int, list[float]], bool | None] | None = None,
) -> list[float]:
    """Run `steps` Adam(W) steps on `params` minimising loss_fn(step); returns the loss of every step.

    weight_decay > 0 uses AdamW (decoupled decay); max_grad_norm clips the gradients' global norm.
    on_step(steps done, losses so far), if given, is called after every optimiser step; when it
    returns True the run ends there (the returned list is then shorter than `steps`).
    """
    from tqdm.auto import tqdm

    if weight_decay > 0:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, dynamic_ncols=True) as bar:
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(step)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            bar.update(1)
            if on_step is not None and on_step(step + 1, losses):
                break
    return losses


def loss_summary(losses: list[float]) -> dict:
    """Loss curve statistics: every step's loss, and the means of the first and last tenth (≥ 1 step)."""
    k = max(1, len(losses) // 10)
    return {
        "loss": losses,
        "loss_first": sum(losses[:k]) / k if losses else None,
        "loss_last": sum(losses[-k:]) / k if losses else None,
        "loss_window": k,
    }


def settings_dict(settings) -> dict:
    """A settings dataclass as JSON-ready values (tuples as lists, dtypes as names)."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


class SnapshotHook:
    """An `optimise` on_step callback that hands on_snapshot(k, edit) the Edit of the weights after k
    steps, for every k in `snapshots` (meta(losses so far) gives its meta). on_snapshot may return
    True to end the training at k (a sweep that found what it looked for).

    Time spent here (building the snapshot edits and in on_snapshot) is kept in `overhead` and left
    out of every "seconds": a snapshot's seconds, and the final edit's when built with
    start + overhead, are the time a run of that many steps takes.
    """

    def __init__(
        self,
        pipe,
        trained: torch.nn.Module,
        names: list[str],
        meta: Callable[[list[float]], dict],
        start: float,
        snapshots: Sequence[int],
        on_snapshot: Callable[[int, Edit], bool | None] | None,
    ):
        self.pipe, self.trained, self.names, self.meta, self.start = pipe, trained, names, meta, start
        self.wanted = set(snapshots) if on_snapshot is not None else set()
        self.on_snapshot = on_snapshot
        self.overhead = 0.0

    def __call__(self, done: int, losses: list[float]) -> bool:
        if done not in self.wanted:
            return False
        t0 = time.perf_counter()
        edit = unet_edit(self.pipe, self.trained, self.names, self.meta(list(losses)), self.start + self.overhead)
        stop = self.on_snapshot(done, edit) is True  # only True ends it, not any truthy value a lambda returns
        self.overhead += time.perf_counter() - t0
        return stop


@torch.no_grad()
def unet_edit(pipe, trained: torch.nn.Module, names: list[str], meta: dict, start: float) -> Edit:
    """The Edit from `pipe`'s UNet tensors at `names` to `trained`'s (cast to the pipeline's dtype).

    Tensors that did not change (bitwise, after the cast) are left out. `start` is the
    time.perf_counter() at which the method started (meta["seconds"] measures from it).
    """
    base = dict(pipe.unet.named_parameters())
    new = dict(trained.named_parameters())
    before, after = {}, {}
    for name in names:
        path = name.removeprefix(f"{UNET}.")
        old = base[path].detach().to("cpu", copy=True)
        updated = new[path].detach().to("cpu", old.dtype, copy=True)  # a snapshot must not follow training
        if not torch.equal(old, updated):
            before[name], after[name] = old, updated
    if not after:
        raise InvalidInputError("training changed no weight (in the pipeline's dtype); raise --steps or --lr")
    meta = {
        **meta,
        "family": detect_family(pipe).name,
        "fingerprint": fingerprint_tensors(before),
        "seconds": time.perf_counter() - start,
    }
    return Edit(before, after, meta)
