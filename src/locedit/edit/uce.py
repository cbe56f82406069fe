"""UCE (Unified Concept Editing; Gandikota et al., WACV 2024): a closed-form edit of every UNet
cross-attention key and value projection (attn2.to_k, attn2.to_v).

For each projection W (d_out × d_in, d_in = the text-embedding width), with c_i the embeddings of
the edited concepts (the text encoder's output, as the UNet reads it, at the concept's last token),
v*_i = W c*_i the projection of the target concept's embedding, and c_j the preserved concepts:

    W' = argmin  s_e Σ_i ||W' c_i − v*_i||² + s_p Σ_j ||W' c_j − W c_j||² + λ ||W' − W||_F²
       = (s_e Σ_i v*_i c_iᵀ + s_p Σ_j W c_j c_jᵀ + λ W) (s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ + λ I)⁻¹

(the paper's Eq. 7 with its code's λ terms). An empty target concept ("") maps the concept onto
the start token's embedding, as the reference code does for its default guide ''.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from locedit.edit.edit import Edit
from locedit.edit.quickfix import POSITION_MODES, check_templates, normalize_pairs, read_templates, solve_ridge
from locedit.edit.targets import cross_attention_projections, fingerprint_tensors, unet_name
from locedit.edit.unet_tuning import encode, settings_dict
from locedit.errors import InvalidInputError
from locedit.models import detect_family, find_subject_span
from locedit.options import is_number, option, require, require_choice


@dataclass
class UCESettings:
    """Hyper-parameters of UCE. Defaults are those of the reference code (trainscripts/uce_sd_erase.py)."""

    # λ: pull of every projection towards its original weight, in squared embedding norm. The
    # reference's 0.5 (its first release used 0.1).
    lam: float = option(0.5, parse=float, help="ridge strength λ: how hard the edited weight is held at the original")
    # s_e: weight of the edited concepts' rows. The reference's 1.
    erase_scale: float = 1.0
    # s_p: weight of the preserved concepts' rows. The reference's 1 (its first release: 0.1).
    preserve_scale: float = 1.0
    # Caption templates, "{}" marking the concept; each yields one key caption and its target caption
    # (a non-empty target is templated too). The reference edits the bare concept prompt; its
    # --expand_prompts adds five templates such as "painting by {}".
    templates: tuple[str, ...] = option(
        ("{}",),
        parse=read_templates,
        metavar="FILE",
        shown="'{}' (the bare concept)",
        help="caption templates file, one per line, '{}' marks the concept",
    )
    # "last": the concept's last token only (the reference); "last+after": that token and every later
    # position (end token and padding), paired by offset, as the first UCE release did. ("subject"
    # counts as "last+after" here.)
    positions: str = option("last", choices=POSITION_MODES, help="edited token positions")
    # Which cross-attention projections to edit (both, as the reference).
    projections: tuple[str, ...] = ("to_k", "to_v")
    # dtype of the solve.
    solve_dtype: torch.dtype = torch.float64

    def __post_init__(self):
        self.templates = check_templates(self.templates)
        require(
            self, "lam", is_number(self.lam) and self.lam > 0, "> 0", "it keeps each projection close to the original"
        )
        require(self, "erase_scale", is_number(self.erase_scale) and self.erase_scale > 0, "> 0")
        require(self, "preserve_scale", is_number(self.preserve_scale) and self.preserve_scale >= 0, ">= 0")
        require_choice(self, "positions", POSITION_MODES)
        require(self, "projections", bool(self.projections), "one or more of to_k, to_v")


def uce_pairs(pairs) -> list[tuple[str, str]]:
    """(concept, target) pairs from a mapping, one tuple or a sequence of tuples; the target may be ""."""
    return normalize_pairs(pairs, allow_empty_value=True)


def _positions(tokenizer, caption: str, subject: str, mode: str, context: int) -> list[int]:
    """Token positions of `subject` in `caption` the edit uses; "" (the empty caption) has its start token last."""
    last = find_subject_span(tokenizer, caption, subject)[1] - 1 if subject else 0
    return [last] if mode == "last" else list(range(last, context))


def uce(
    pipe,
    pairs,
    preserve: Sequence[str] = (),
    settings: UCESettings | None = None,
    lam: float | None = None,
    templates: Sequence[str] | None = None,
    positions: str | None = None,
) -> Edit:
    """Compute a UCE edit of `pipe`'s cross-attention K/V projections (`pipe` is left untouched).

    Args:
        pairs: (concept, target) pairs, e.g. [("van gogh", "painting")] or {"van gogh": ""}.
        preserve: concepts whose projections must stay as they are.
        lam, templates, positions: override the fields of `settings` (see UCESettings).

    Returns:
        An Edit of every attn2 to_k/to_v weight, meta method "uce" with pairs, preserve, settings,
        fingerprint, seconds, fit_captions and stats: key rows, preserve rows, and the relative error
        ||W'c − v*|| / ||v*|| of the edited rows (mean and max over rows and projections).
    """
    overrides = dict(
        lam=None if lam is None else float(lam),
        templates=None if templates is None else tuple(templates),
        positions=positions,
    )
    cfg = replace(settings or UCESettings(), **{k: v for k, v in overrides.items() if v is not None})
    templates = cfg.templates
    pair_list = uce_pairs(pairs)
    preserve = [c.strip() for c in preserve if c.strip()]
    family = detect_family(pipe)
    start = time.perf_counter()

    tokenizer = pipe.tokenizer
    context = int(tokenizer.model_max_length)
    key_caps = [(t.format(k), k) for k, _ in pair_list for t in templates]
    val_caps = [(t.format(v) if v else "", v) for _, v in pair_list for t in templates]
    pres_caps = [(t.format(c), c) for c in preserve for t in templates]
    # Positions first: a concept missing from its caption fails before any forward runs.
    key_pos = [_positions(tokenizer, c, s, cfg.positions, context) for c, s in key_caps]
    val_pos = [_positions(tokenizer, c, s, cfg.positions, context) for c, s in val_caps]
    pres_pos = [_positions(tokenizer, c, s, cfg.positions, context) for c, s in pres_caps]
    captions = [c for c, _ in key_caps + val_caps + pres_caps]
    embeds = encode(pipe, captions, pipe.unet.config.sample_size)[0].embeds.to(cfg.solve_dtype)  # (B, T, D)

    n, m = len(key_caps), len(val_caps)
    key_idx, val_idx = [], []
    for i, (kp, vp) in enumerate(zip(key_pos, val_pos)):
        common = min(len(kp), len(vp))  # pair key and target positions by offset from the last concept token
        key_idx += [(i, p) for p in kp[:common]]
        val_idx += [(n + i, p) for p in vp[:common]]
    pres_idx = [(n + m + i, p) for i, pp in enumerate(pres_pos) for p in pp]

    def gather(idx: list[tuple[int, int]]) -> torch.Tensor:
        if not idx:
            return embeds.new_zeros((0, embeds.shape[-1]))
        rows, cols = zip(*idx)
        return embeds[list(rows), list(cols)]

    edit_keys, target_keys, pres_keys = gather(key_idx), gather(val_idx), gather(pres_idx)
    se, sp = cfg.erase_scale**0.5, cfg.preserve_scale**0.5
    keys = torch.cat([se * edit_keys, sp * pres_keys])  # rows scaled so that plain ridge gives the weighted solve

    before, after, errors = {}, {}, []
    for path in cross_attention_projections(pipe.unet, cfg.projections):
        weight = pipe.unet.get_submodule(path).weight.detach()
        w = weight.to(cfg.solve_dtype)
        targets = target_keys @ w.T  # v* = W c*
        values = torch.cat([se * targets, sp * (pres_keys @ w.T)])
        w_new = solve_ridge(w, keys, values, cfg.lam)
        err = (edit_keys @ w_new.T - targets).norm(dim=1) / targets.norm(dim=1).clamp_min(1e-12)
        errors.append(err)
        name = unet_name(path)
        before[name] = weight.to("cpu", copy=True)
        after[name] = w_new.to(weight.dtype).cpu()
    if not after:
        raise InvalidInputError(
            f"this UNet has no cross-attention (attn2) projections {', '.join(cfg.projections)} to edit"
        )
    err = torch.cat(errors)
    return Edit(
        before=before,
        after=after,
        meta={
            "method": "uce",
            "family": family.name,
            "pairs": [list(p) for p in pair_list],
            "preserve": preserve,
            "settings": settings_dict(cfg),
            "fingerprint": fingerprint_tensors(before),
            "seconds": time.perf_counter() - start,
            "fit_captions": sorted({c for c in captions if c}),
            "stats": {
                "key_rows": int(edit_keys.shape[0]),
                "preserve_rows": int(pres_keys.shape[0]),
                "rel_error_mean": float(err.mean()),
                "rel_error_max": float(err.max()),
            },
        },
    )
