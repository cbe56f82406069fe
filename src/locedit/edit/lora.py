"""Exact LoRA export of an edit: ΔW = W' − W factorised by SVD into up (d_out×r) and down (r×d_in).

ΔW has rank at most the number of edit key rows. With no rank given, every singular value above
float32 resolution is kept, so the LoRA reproduces ΔW to float32 precision; with a rank, the
relative reconstruction error ||ΔW − up·down||_F / ||ΔW||_F is reported. Errors are measured on the
float32 factors the file stores, so they are what a client loading the file gets.

Formats:
- "diffusers": peft keys "<component>.<module path>.lora_A.weight" (down) / "lora_B.weight" (up),
  read by diffusers' `pipe.load_lora_weights(path)`; no alpha, so the scale is 1.
- "kohya": "lora_te_<module path with _>.lora_down.weight" / ".lora_up.weight" / ".alpha" (= rank,
  scale 1), with lora_te1_/lora_te2_ for SDXL's two encoders, as A1111 and ComfyUI read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from locedit.io import atomic_path

LORA_FORMATS = ("diffusers", "kohya")
_KOHYA_PREFIX = {"text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
_SDXL_KOHYA_PREFIX = {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}


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
        raise ValueError(f"LoRA rank must be a positive integer (got {rank})")
    rank = min(rank, s.numel())
    root = s[:rank].sqrt()
    up = (u[:, :rank] * root).float().contiguous()
    down = (root[:, None] * vh[:rank]).float().contiguous()
    norm = d.norm()
    err = float((d - up.double() @ down.double()).norm() / norm) if norm > 0 else 0.0
    return up, down, err


def _kohya_name(edit, name: str) -> str:
    component, _, rest = name.partition(".")
    module_path = rest.rpartition(".")[0]
    prefixes = _SDXL_KOHYA_PREFIX if edit.meta.get("family") == "sdxl" else _KOHYA_PREFIX
    return f"{prefixes[component]}_{module_path.replace('.', '_')}"


def export_lora(edit, path: str | Path, format: str = "diffusers", rank: int | None = None) -> dict:
    """Write the edit as a LoRA safetensors file (atomically) and report ranks and errors.

    Returns:
        {"path", "format", "ranks": {weight: r}, "rel_errors": {weight: float}}.
    """
    if format not in LORA_FORMATS:
        raise ValueError(f"unknown LoRA format {format!r}; use one of {', '.join(LORA_FORMATS)}")
    if rank is not None and rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer (got {rank})")
    tensors, ranks, errors = {}, {}, {}
    for name in edit.names:
        up, down, err = factorize(edit.delta(name), rank)
        ranks[name], errors[name] = up.shape[1], err
        if format == "diffusers":
            base = name.removesuffix(".weight")
            tensors[f"{base}.lora_A.weight"] = down
            tensors[f"{base}.lora_B.weight"] = up
        else:
            base = _kohya_name(edit, name)
            tensors[f"{base}.lora_down.weight"] = down
            tensors[f"{base}.lora_up.weight"] = up
            tensors[f"{base}.alpha"] = torch.tensor(float(up.shape[1]))
    meta = {"locedit.lora": json.dumps({"edit": edit.meta, "ranks": ranks, "rel_errors": errors}, sort_keys=True)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return {"path": str(path), "format": format, "ranks": ranks, "rel_errors": errors}
