"""Exact LoRA export of an edit: ΔW = W' − W factorised by SVD into up (d_out×r) and down (r×d_in).

ΔW has rank at most the number of edit key rows. With no rank given, every singular value above
float32 resolution is kept, so the LoRA reproduces ΔW to float32 precision; with a rank, the
relative reconstruction error ||ΔW − up·down||_F / ||ΔW||_F is reported. Errors are measured on the
float32 factors the file stores, so they are what a client loading the file gets.

Formats:
- "diffusers": peft keys "<component>.<module path>.lora_A.weight" (down) / "lora_B.weight" (up),
  no alpha (scale 1). Read by diffusers' `pipe.load_lora_weights(path)` and by ComfyUI/Forge's
  loaders (peft lora_A/lora_B keys); AUTOMATIC1111 does not read it.
- "kohya": "lora_te_<module path with _>.lora_down.weight" / ".lora_up.weight" / ".alpha" (= rank,
  scale 1), with lora_te1_/lora_te2_ for SDXL's two encoders. Read by every client: AUTOMATIC1111,
  Forge, ComfyUI, kohya sd-scripts, diffusers.

UNet weights (the baselines' edits: ESD, Concept Ablation, UCE) are named "unet.<diffusers module
path>.lora_A/B.weight" in the diffusers format and "lora_unet_<module path with _>" in the kohya
format (the SD1/SD2 naming of kohya sd-scripts, whose SD1/SD2 UNet has diffusers' module paths).
A LoRA carries linear weights only: an edit that changes biases, norms or convolutions is refused.
Where the UNet modules' exact ranks differ, a diffusers file pads every UNet factor pair with zeros
to the largest rank (the reported ranks stay the exact ones): diffusers before 0.42 gives a file
without alphas the first module's rank as lora_alpha, so a module of another rank would be scaled by
r_first/r (utils/peft_utils.py get_peft_kwargs). Kohya UNet entries share one alpha (the largest
UNet rank) and hold up·(rank/alpha), so that every client's alpha/rank scale gives ΔW back: with
per-module alphas, diffusers puts the odd ones in an alpha_pattern under names its PEFT config does
not match, and applies them at a wrong scale.

What the kohya format adds so that every client applies the whole edit:
- Zero entries for the other three of q_proj/k_proj/v_proj/out_proj beside each edited
  self-attention projection of an OpenCLIP encoder (SD2's encoder, SDXL's second). AUTOMATIC1111
  runs those encoders through torch.nn.MultiheadAttention, which reads in_proj_weight and
  out_proj.weight without calling the projections' forwards, and its networks.py
  (network_apply_weights) changes a MultiheadAttention only when q, k, v and out are all present:
  without them the change is dropped silently. The zeros change nothing in any client.
  They have the edited projection's rank and alpha: diffusers (utils/peft_utils.py get_peft_kwargs) puts a
  module whose rank or alpha differs from the encoder's most common one into rank_pattern /
  alpha_pattern, and its text-encoder alpha_pattern keys name the attention block rather than the
  projection, so e.g. rank-1 alpha-1 companions would leave out_proj at alpha 1 with rank r (scale 1/r).
- Metadata, in both formats: "ss_base_model_version" and "ss_v2" with kohya sd-scripts' values
  (model_util.get_model_version_str_for_sd1_sd2: "sd_v1", "sd_v2"; sdxl_model_util:
  "sdxl_base_v1-0"; train_network.py writes "ss_v2" as str(bool)). AUTOMATIC1111 and Forge
  (extensions-builtin/*/network.py NetworkOnDisk.detect_version) file a LoRA as SDXL when
  ss_base_model_version starts with "sdxl_", as SD2 when ss_v2 == "True", else as SD1 whenever the
  file has any metadata, and hide LoRAs of other versions than the loaded checkpoint's.
  The edit does not know the scheduler, so SD2 is written "sd_v2" whether or not the model is
  v-prediction (kohya's "_v" suffix, which no client reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from locedit.errors import InvalidInputError
from locedit.io import atomic_path

LORA_FORMATS = ("diffusers", "kohya")
DEFAULT_LORA_FORMAT = "diffusers"  # read by diffusers, ComfyUI and Forge; kohya also by AUTOMATIC1111
_KOHYA_PREFIX = {"text_encoder": "lora_te", "text_encoder_2": "lora_te2", "unet": "lora_unet"}
_SDXL_KOHYA_PREFIX = {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2", "unet": "lora_unet"}
# Encoders that AUTOMATIC1111 runs as OpenCLIP (torch.nn.MultiheadAttention): SD2's, SDXL's second.
_OPENCLIP_ENCODERS = {"sd2": ("text_encoder",), "sdxl": ("text_encoder_2",)}
# kohya sd-scripts' ss_base_model_version per family (see module docstring).
_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_ATTN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def factorize(delta: torch.Tensor, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """float32 SVD factors up (d_out, r) and down (r, d_in) of `delta` (d_out, d_in), and the
    relative reconstruction error ||delta − up·down||_F / ||delta||_F of those float32 factors.

    rank=None keeps the singular values above float32 resolution (s > s_max * 1e-7). (An extra
    factor max(d), as in numpy's matrix_rank, dropped real directions of corpus-regularised edits.)
    """
    d = delta.double()
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    if rank is None:
        tol = (s[0] if s.numel() else 0.0) * 1e-7
        rank = max(1, int((s > tol).sum()))
    if not 1 <= rank:
        raise InvalidInputError(f"LoRA rank must be a positive integer (got {rank})")
    rank = min(rank, s.numel())
    root = s[:rank].sqrt()
    up = (u[:, :rank] * root).float().contiguous()
    down = (root[:, None] * vh[:rank]).float().contiguous()
    norm = d.norm()
    err = float((d - up.double() @ down.double()).norm() / norm) if norm > 0 else 0.0
    return up, down, err


def _pad_rank(up: torch.Tensor, down: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """up (d_out, r) and down (r, d_in) padded with zeros to rank `rank` (same product)."""
    extra = rank - up.shape[1]
    up = torch.cat([up, up.new_zeros(up.shape[0], extra)], dim=1)
    down = torch.cat([down, down.new_zeros(extra, down.shape[1])], dim=0)
    return up.contiguous(), down.contiguous()


def _relative_error(delta: torch.Tensor, up: torch.Tensor, down: torch.Tensor, scale: float = 1.0) -> float:
    """||delta − scale·up·down||_F / ||delta||_F of stored float32 factors (0 for a zero delta)."""
    d = delta.double()
    norm = d.norm()
    return float((d - scale * (up.double() @ down.double())).norm() / norm) if norm > 0 else 0.0


def _kohya_name(family: str, name: str) -> str:
    """kohya module name of canonical weight `name`, e.g. "lora_te1_text_model_encoder_layers_0_self_attn_out_proj"."""
    component, _, rest = name.partition(".")
    module_path = rest.rpartition(".")[0]
    prefixes = _SDXL_KOHYA_PREFIX if family == "sdxl" else _KOHYA_PREFIX
    return f"{prefixes[component]}_{module_path.replace('.', '_')}"


def _attention_companions(family: str, name: str) -> tuple[str, ...]:
    """The zero entries a kohya file needs beside a self-attention projection weight: for an
    encoder that AUTOMATIC1111 runs as MultiheadAttention, the other three of q/k/v/out (which must
    be present too); elsewhere out_proj when another projection is edited (diffusers' kohya loader,
    lora_conversion_utils + state_dict_utils, recognises a text-encoder file by its out_proj key and
    fails on a file with v_proj alone); else ()."""
    component, _, rest = name.partition(".")
    proj = next((p for p in _ATTN_PROJECTIONS if rest.endswith(f"self_attn.{p}.weight")), None)
    if proj is None:
        return ()
    if component in _OPENCLIP_ENCODERS.get(family, ()):
        return tuple(p for p in _ATTN_PROJECTIONS if p != proj)
    return () if proj == "out_proj" else ("out_proj",)


def _client_metadata(family: str | None) -> dict[str, str]:
    """The kohya sd-scripts keys AUTOMATIC1111 and Forge read to file a LoRA under SD1/SD2/SDXL."""
    if family not in _BASE_MODEL_VERSION:
        return {}
    return {"ss_base_model_version": _BASE_MODEL_VERSION[family], "ss_v2": str(family == "sd2")}


def export_lora(edit, path: str | Path, format: str = DEFAULT_LORA_FORMAT, rank: int | None = None) -> dict:
    """Write the edit as a LoRA safetensors file (atomically) and report ranks and errors.

    rel_errors are those of the stored float32 factors (see factorize). Kohya files also hold zero
    q/k/v companions of OpenCLIP out_proj entries and both formats the ss_* metadata that
    AUTOMATIC1111/Forge classify LoRAs by (see the module docstring).

    Returns:
        {"path", "format", "ranks": {weight: r}, "rel_errors": {weight: float}}.
    """
    if format not in LORA_FORMATS:
        raise InvalidInputError(f"unknown LoRA format {format!r}; use one of {', '.join(LORA_FORMATS)}")
    if rank is not None and rank < 1:
        raise InvalidInputError(f"LoRA rank must be a positive integer (got {rank})")
    family = edit.meta.get("family")
    if format == "kohya" and family not in _BASE_MODEL_VERSION:
        raise InvalidInputError(
            f"the edit records no known model family (got {family!r}); kohya key names depend on it (sd1, sd2, sdxl)"
        )
    not_linear = [n for n in edit.names if edit.after[n].dim() != 2]
    if not_linear:
        raise InvalidInputError(
            f"a LoRA carries linear weights only, but this edit changes {len(not_linear)} other tensor(s) "
            f"(biases, norms or convolutions, e.g. {not_linear[0]}); save the edit file instead"
        )
    tensors, ranks, errors = {}, {}, {}
    companions = {}  # kohya module name -> (zero up, zero down, alpha)
    factors = {name: factorize(edit.delta(name), rank) for name in edit.names}
    # One alpha for every kohya UNet module, and one rank for every diffusers UNet module (see the
    # module docstring): the largest UNet rank.
    unet_ranks = {f[0].shape[1] for n, f in factors.items() if n.startswith("unet.")}
    unet_alpha = max(unet_ranks, default=None)
    for name in edit.names:
        up, down, err = factors[name]
        ranks[name], errors[name] = up.shape[1], err
        if format == "diffusers":
            if name.startswith("unet.") and len(unet_ranks) > 1:
                up, down = _pad_rank(up, down, unet_alpha)
            base = name.removesuffix(".weight")
            tensors[f"{base}.lora_A.weight"] = down
            tensors[f"{base}.lora_B.weight"] = up
            continue
        base = _kohya_name(family, name)
        alpha = torch.tensor(float(up.shape[1]))
        if name.startswith("unet."):  # clients scale by alpha / rank: fold rank / alpha into up
            alpha = torch.tensor(float(unet_alpha))
            up = (up * (up.shape[1] / unet_alpha)).contiguous()
            errors[name] = _relative_error(edit.delta(name), up, down, unet_alpha / up.shape[1])
        tensors[f"{base}.lora_down.weight"] = down
        tensors[f"{base}.lora_up.weight"] = up
        tensors[f"{base}.alpha"] = alpha
        own = base.rpartition("_self_attn_")[2]  # "out_proj", "v_proj", ...
        for proj in _attention_companions(family, name):  # CLIP's q/k/v/out all have shape (hidden, hidden)
            companion = base.removesuffix(own) + proj
            companions[companion] = (torch.zeros_like(up), torch.zeros_like(down), alpha.clone())
    for base, (up, down, alpha) in companions.items():
        if f"{base}.lora_down.weight" not in tensors:  # a real edit of that projection wins
            tensors[f"{base}.lora_down.weight"] = down
            tensors[f"{base}.lora_up.weight"] = up
            tensors[f"{base}.alpha"] = alpha
    meta = {"locedit.lora": json.dumps({"edit": edit.meta, "ranks": ranks, "rel_errors": errors}, sort_keys=True)}
    meta.update(_client_metadata(family))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return {"path": str(path), "format": format, "ranks": ranks, "rel_errors": errors}
