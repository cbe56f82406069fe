"""LocoEdit (Basu et al., ICML 2024): a closed-form edit of the key and value projections (to_k, to_v)
of the few cross-attention layers LocoGen localized, and its neuron-level variant.

Layer-level: for each chosen projection W (d_out × d_in, d_in = the text-embedding width), with
X_key the text-encoder outputs (as the UNet reads them) at the last subject token of the key captions
(templates with the concept, e.g. "a painting by van gogh") and X_value those of the value captions
(the same templates with the value, e.g. "a painting"), paired by position offset:

    W' = argmin ||W' X_key − W X_value||² + λ ||W' − W||²
       = (W X_value X_keyᵀ + λ W) (X_key X_keyᵀ + λ I)⁻¹        (columns of X are rows; quickfix.solve_ridge)

With positions "last+after" the end token and padding positions after the subject are paired too:
the positions DIFF-QUICKFIX found to carry the concept through causal attention.

Neuron-level (the paper's claim, not in its released code): rank the output neurons of the chosen
to_k / to_v by a Welch z-score between their activations on captions with the concept and without it
(the value captions), and replace the top-k neurons' activations by their mean over the captions
without it. The replacement has an exact hook-free weight form, because cross-attention weights over
the text positions sum to one (no mask): a key neuron that is constant over positions adds the same
logit to every position, which softmax ignores, so its row of to_k is zeroed; a value neuron that is
constant c makes the attention output constant c in that channel, so its row of to_v is zeroed and
to_out.0's bias gains W_out[:, i]·c. (With no to_out bias the edit is refused; `neuron_hooks` is the
runtime form.) The edit changes biases, so it exports as an edit file, not as a LoRA.

Layers are indexed 0..M−1 over the UNet's cross-attention (attn2) modules in forward order, the
indices LocoGen reports (locedit.trace.locogen.cross_attention_layers).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from locedit.edit.edit import Edit
from locedit.edit.quickfix import DEFAULT_TEMPLATES, check_templates, normalize_pairs, read_templates, solve_ridge
from locedit.edit.targets import fingerprint_tensors, unet_name
from locedit.edit.unet_tuning import encode, settings_dict
from locedit.errors import InvalidInputError
from locedit.models import detect_family, find_subject_span
from locedit.options import is_int, is_number, option, require, require_choice

LOCO_POSITIONS = ("last", "last+after")
_SECTION = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
_ATTN2 = re.compile(
    r"(?P<section>down_blocks|up_blocks|mid_block)(?:\.(?P<block>\d+))?\.attentions\.(?P<attn>\d+)"
    r"\.transformer_blocks\.(?P<tb>\d+)\.attn2"
)


@dataclass
class LocoEditSettings:
    """Hyper-parameters of LocoEdit (layer-level and neuron-level)."""

    # λ: pull of every projection towards its original weight, in squared embedding norm. 0.1 maps the
    # key onto the value to a relative error of a few percent on the tiny and built-in models while
    # leaving other captions' keys nearly unchanged (DIFF-QUICKFIX uses 0.01, UCE 0.5).
    lam: float = option(0.1, parse=float, help="ridge strength λ: how hard the edited weight is held at the original")
    # Caption templates, "{}" marking the concept (key) or the value: DIFF-QUICKFIX's four, so that the
    # edit holds in several contexts and the neuron ranking has several captions per side.
    templates: tuple[str, ...] = option(
        DEFAULT_TEMPLATES,
        parse=read_templates,
        metavar="FILE",
        shown=f"the {len(DEFAULT_TEMPLATES)} built-in templates",
        help="caption templates file, one per line, '{}' marks the concept",
    )
    # "last": the concept's last token only (the paper); "last+after": that token and every later
    # position (end token, padding), paired by offset with the value caption's.
    positions: str = option("last", choices=LOCO_POSITIONS, help="edited token positions")
    # Neuron-level LocoEdit: how many to_k/to_v output neurons (over all chosen layers) are replaced.
    neurons: int = option(8, parse=int, metavar="K", help="locoedit-neurons: neurons replaced (top K by Welch z)")
    # Which cross-attention projections to edit (both, as the paper).
    projections: tuple[str, ...] = ("to_k", "to_v")
    # dtype of the solve.
    solve_dtype: torch.dtype = torch.float64

    def __post_init__(self):
        self.templates = check_templates(self.templates)
        require(self, "lam", is_number(self.lam) and self.lam > 0, "> 0", "it keeps each projection close")
        require_choice(self, "positions", LOCO_POSITIONS)
        require(self, "neurons", is_int(self.neurons, 1), "a positive integer")
        require(
            self,
            "projections",
            bool(self.projections) and set(self.projections) <= {"to_k", "to_v"},
            "one or more of to_k, to_v",
        )


def cross_attention_modules(unet: torch.nn.Module) -> list[str]:
    """Module paths of the UNet's cross-attention (attn2) modules in forward order (down, mid, up blocks;
    attentions and transformer blocks by index): index i is LocoGen's layer i."""

    def key(name: str) -> tuple[int, ...]:
        m = _ATTN2.fullmatch(name)
        return (_SECTION[m["section"]], int(m["block"] or 0), int(m["attn"]), int(m["tb"]))

    return sorted((name for name, _ in unet.named_modules() if _ATTN2.fullmatch(name)), key=key)


def check_layers(unet: torch.nn.Module, layers: Sequence[int]) -> list[str]:
    """Module paths of cross-attention layers `layers` (indices in forward order); InvalidInputError when
    empty or out of range."""
    names = cross_attention_modules(unet)
    if not layers:
        raise InvalidInputError("no cross-attention layers given; use --layers IDX [IDX ...] or --layers auto")
    for i in layers:
        if not is_int(i, 0) or i >= len(names):
            raise InvalidInputError(
                f"cross-attention layer index {i} is out of range; this model has {len(names)} cross-attention "
                f"layers (indices 0..{len(names) - 1})"
            )
    return [names[i] for i in sorted(set(layers))]


def _settings(settings: LocoEditSettings | None, **overrides) -> LocoEditSettings:
    return replace(settings or LocoEditSettings(), **{k: v for k, v in overrides.items() if v is not None})


def _positions(tokenizer, caption: str, subject: str, mode: str, context: int) -> list[int]:
    last = find_subject_span(tokenizer, caption, subject)[1] - 1
    return [last] if mode == "last" else list(range(last, context))


@torch.no_grad()
def edit_keys(pipe, pairs, settings: LocoEditSettings | None = None) -> dict:
    """The rows LocoEdit fits: text-encoder outputs (as the UNet reads them) at the key and value
    captions' positions.

    Returns:
        {"keys": (N, D), "values": (N, D) in settings.solve_dtype, "key_positions" and
        "value_positions": N [caption, position] pairs (the rows' sources), "captions": every caption}.
    """
    cfg = settings or LocoEditSettings()
    pair_list = normalize_pairs(pairs)
    tokenizer = pipe.tokenizer
    context = int(tokenizer.model_max_length)
    key_caps = [(t.format(k), k) for k, _ in pair_list for t in cfg.templates]
    val_caps = [(t.format(v), v) for _, v in pair_list for t in cfg.templates]
    key_pos = [_positions(tokenizer, c, s, cfg.positions, context) for c, s in key_caps]
    val_pos = [_positions(tokenizer, c, s, cfg.positions, context) for c, s in val_caps]
    captions = [c for c, _ in key_caps + val_caps]
    embeds = encode(pipe, captions, pipe.unet.config.sample_size)[0].embeds.to(cfg.solve_dtype)  # (B, T, D)
    n = len(key_caps)
    key_idx, val_idx = [], []
    for i, (kp, vp) in enumerate(zip(key_pos, val_pos)):
        common = min(len(kp), len(vp))  # pair key and value positions by offset from the last concept token
        key_idx += [(i, p) for p in kp[:common]]
        val_idx += [(n + i, p) for p in vp[:common]]
    gather = lambda idx: embeds[[r for r, _ in idx], [p for _, p in idx]]  # noqa: E731
    return {
        "keys": gather(key_idx),
        "values": gather(val_idx),
        "key_positions": [[captions[r], p] for r, p in key_idx],
        "value_positions": [[captions[r], p] for r, p in val_idx],
        "captions": captions,
    }


def locoedit(
    pipe,
    pairs,
    layers: Sequence[int],
    settings: LocoEditSettings | None = None,
    lam: float | None = None,
    templates: Sequence[str] | None = None,
    positions: str | None = None,
) -> Edit:
    """Compute a LocoEdit of `pipe`'s cross-attention layers `layers` (`pipe` is left untouched).

    Args:
        pairs: (key, value) pairs, e.g. [("van gogh", "painting")] or {"red": "blue"}.
        layers: cross-attention layer indices in forward order (LocoGen's pick, e.g. [4]).
        lam, templates, positions: override the fields of `settings` (see LocoEditSettings).

    Returns:
        An Edit of the chosen layers' to_k/to_v weights, meta method "locoedit" with pairs, layers,
        layer_modules, settings, fingerprint, seconds, fit_captions, key_positions, value_positions and
        stats: key rows and the relative error ||W'x_key − W x_value|| / ||W x_value|| (mean, max).
    """
    cfg = _settings(
        settings,
        lam=None if lam is None else float(lam),
        templates=None if templates is None else tuple(templates),
        positions=positions,
    )
    modules = check_layers(pipe.unet, layers)
    pair_list = normalize_pairs(pairs)
    family = detect_family(pipe)
    start = time.perf_counter()
    rows = edit_keys(pipe, pair_list, cfg)
    keys, values = rows["keys"], rows["values"]
    before, after, errors = {}, {}, []
    for module in modules:
        for proj in cfg.projections:
            path = f"{module}.{proj}"
            weight = pipe.unet.get_submodule(path).weight.detach()
            w = weight.to(cfg.solve_dtype)
            targets = values @ w.T  # W x_value
            w_new = solve_ridge(w, keys, targets, cfg.lam)
            errors.append((keys @ w_new.T - targets).norm(dim=1) / targets.norm(dim=1).clamp_min(1e-12))
            name = unet_name(path)
            before[name] = weight.to("cpu", copy=True)
            after[name] = w_new.to(weight.dtype).cpu()
    err = torch.cat(errors)
    return Edit(
        before=before,
        after=after,
        meta={
            "method": "locoedit",
            "family": family.name,
            "pairs": [list(p) for p in pair_list],
            "preserve": [],
            "layers": sorted(set(int(i) for i in layers)),
            "layer_modules": modules,
            "settings": settings_dict(cfg),
            "fingerprint": fingerprint_tensors(before),
            "seconds": time.perf_counter() - start,
            "fit_captions": sorted(set(rows["captions"])),
            "key_positions": rows["key_positions"],
            "value_positions": rows["value_positions"],
            "stats": {
                "key_rows": int(keys.shape[0]),
                "preserve_rows": 0,
                "rel_error_mean": float(err.mean()),
                "rel_error_max": float(err.max()),
            },
        },
    )


# ------------------------------------------------------------------------------- neuron level
def welch_z(with_: torch.Tensor, without: torch.Tensor) -> torch.Tensor:
    """Welch z-score per column of two samples (n1, d) and (n2, d): (mean1 − mean2) / sqrt(s1²/n1 + s2²/n2)
    (unbiased variances, a 1e-12 floor on the denominator). Needs n1, n2 >= 2."""
    if with_.shape[0] < 2 or without.shape[0] < 2:
        raise InvalidInputError(
            "the neuron ranking needs at least two captions with and two without the concept; "
            "give more --templates (or more pairs)"
        )
    se = with_.var(dim=0) / with_.shape[0] + without.var(dim=0) / without.shape[0]
    return (with_.mean(dim=0) - without.mean(dim=0)) / se.clamp_min(1e-12).sqrt()


@torch.no_grad()
def rank_neurons(pipe, pairs, layers: Sequence[int], settings: LocoEditSettings | None = None) -> list[dict]:
    """Every to_k/to_v output neuron of the chosen layers, ranked by |Welch z| (largest first).

    Activations are the projections' outputs at the edit rows (edit_keys): key captions (with the
    concept) against value captions (without it). Each entry: {"module": to_k/to_v path, "neuron",
    "z", "mean_without" (the replacement constant)}.
    """
    cfg = settings or LocoEditSettings()
    modules = check_layers(pipe.unet, layers)
    rows = edit_keys(pipe, pairs, cfg)
    ranked = []
    for module in modules:
        for proj in cfg.projections:
            path = f"{module}.{proj}"
            linear = pipe.unet.get_submodule(path)
            w = linear.weight.detach().to(cfg.solve_dtype)
            b = None if linear.bias is None else linear.bias.detach().to(cfg.solve_dtype)
            act_with = rows["keys"] @ w.T + (0 if b is None else b)
            act_without = rows["values"] @ w.T + (0 if b is None else b)
            z = welch_z(act_with, act_without)
            mean_without = act_without.mean(dim=0)
            ranked += [
                {"module": path, "neuron": i, "z": float(z[i]), "mean_without": float(mean_without[i])}
                for i in range(z.shape[0])
            ]
    ranked.sort(key=lambda r: -abs(r["z"]))
    return ranked


def locoedit_neurons(
    pipe, pairs, layers: Sequence[int], k: int | None = None, settings: LocoEditSettings | None = None
) -> Edit:
    """Neuron-level LocoEdit: the top-k neurons (rank_neurons) replaced by their mean over captions
    without the concept, in the exact weight form of the module docstring (to_k/to_v rows zeroed, to_out.0
    bias shifted for value neurons). k defaults to settings.neurons.

    Returns:
        An Edit (method "locoedit-neurons") of the touched to_k/to_v weights and to_out.0 biases; meta
        "neurons" lists the replaced neurons with their z-scores and constants.
    """
    cfg = _settings(settings, neurons=k)
    start = time.perf_counter()
    pair_list = normalize_pairs(pairs)
    chosen = rank_neurons(pipe, pair_list, layers, cfg)[: cfg.neurons]
    before, after = {}, {}

    def tensor(path: str, param: str) -> torch.Tensor:
        name = unet_name(path, param)
        if name not in after:
            current = getattr(pipe.unet.get_submodule(path), param)
            if current is None:
                raise InvalidInputError(
                    f"{path} has no {param}, so a replaced value neuron has no exact weight form here; "
                    "use locoedit.neuron_hooks (a runtime intervention) instead"
                )
            before[name] = current.detach().to("cpu", copy=True)
            after[name] = before[name].clone()
        return after[name]

    for entry in chosen:
        path, i, c = entry["module"], entry["neuron"], entry["mean_without"]
        tensor(path, "weight")[i] = 0
        if pipe.unet.get_submodule(path).bias is not None:
            tensor(path, "bias")[i] = 0 if path.endswith("to_k") else c
            continue
        if path.endswith("to_v"):
            out_path = path.removesuffix("to_v") + "to_out.0"
            w_out = pipe.unet.get_submodule(out_path).weight.detach().double().cpu()
            bias = tensor(out_path, "bias")
            bias.copy_((bias.double() + w_out[:, i] * c).to(bias.dtype))
    return Edit(
        before=before,
        after=after,
        meta={
            "method": "locoedit-neurons",
            "family": detect_family(pipe).name,
            "pairs": [list(p) for p in pair_list],
            "preserve": [],
            "layers": sorted(set(int(i) for i in layers)),
            "layer_modules": check_layers(pipe.unet, layers),
            "settings": settings_dict(cfg),
            "neurons": chosen,
            "fingerprint": fingerprint_tensors(before),
            "seconds": time.perf_counter() - start,
        },
    )


@contextmanager
def neuron_hooks(pipe, neurons: Sequence[dict]):
    """The runtime form of a neuron-level edit: while open, each listed to_k/to_v output neuron
    ({"module", "neuron", "mean_without"}, as Edit.meta["neurons"]) is replaced by its constant."""
    by_module: dict[str, list[tuple[int, float]]] = {}
    for entry in neurons:
        by_module.setdefault(entry["module"], []).append((entry["neuron"], entry["mean_without"]))
    handles = []

    def hook_for(pairs: list[tuple[int, float]]):
        index = torch.tensor([i for i, _ in pairs])
        consts = torch.tensor([c for _, c in pairs])

        def hook(module, args, output):
            out = output.clone()
            out[..., index.to(out.device)] = consts.to(out.device, out.dtype)
            return out

        return hook

    try:
        for path, pairs in by_module.items():
            handles.append(pipe.unet.get_submodule(path).register_forward_hook(hook_for(pairs)))
        yield
    finally:
        for handle in handles:
            handle.remove()
