"""Traceable layers of a diffusers UNet and of a CLIP text encoder: enumeration from name templates,
selection by kind or glob, and windows of consecutive layers.

The UNet addresses come from UNET_TEMPLATES (one regular expression per kind, for the diffusers
UNet2DConditionModel layout that SD1.x, SD2.x and SDXL share), never from literals elsewhere. In
SD-1.5 they give 95 layers: 9 blocks, 22 ResNets, 16 transformer blocks and 16 each of attn1,
attn2 and ff.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import torch

from locedit.errors import InvalidInputError, LoceditError

# Section of the UNet that holds a block: down blocks, the mid block, up blocks (forward order).
_BLOCK = r"(?P<section>down_blocks|up_blocks|mid_block)(?:\.(?P<block>\d+))?"
_TRANSFORMER = _BLOCK + r"\.attentions\.(?P<attn>\d+)\.transformer_blocks\.(?P<tb>\d+)"

# Kind -> full-match pattern of module names in a diffusers UNet2DConditionModel.
UNET_TEMPLATES: dict[str, str] = {
    "block": r"(?:down_blocks\.\d+|mid_block|up_blocks\.\d+)",
    "resnet": _BLOCK + r"\.resnets\.(?P<res>\d+)",
    "transformer": _TRANSFORMER,
    "attn1": _TRANSFORMER + r"\.attn1",
    "attn2": _TRANSFORMER + r"\.attn2",
    "ff": _TRANSFORMER + r"\.ff",
}
UNET_KINDS = tuple(UNET_TEMPLATES)

# Text-encoder states a cell can restore -> the TEXT_TEMPLATES kind of the module whose output it is.
TEXT_STATES: dict[str, str] = {
    "residual": "layer",  # residual stream after layer l (the encoder layer's output)
    "attn": "self_attn",  # output of layer l's self-attention (before the residual add)
    "mlp": "mlp",  # output of layer l's MLP (before the residual add)
}

_SECTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


class UnknownLayerError(LoceditError, ValueError):
    """A --layers pattern matches no traceable layer."""


@dataclass(frozen=True)
class UNetLayer:
    """One traceable UNet module: its dotted name, kind, and position in forward order."""

    name: str
    kind: str
    order: tuple[int, ...]


def _order_key(name: str) -> tuple[int, ...]:
    """Forward-order sort key of a UNet module name (down < mid < up; resnet i before attention i)."""
    parts = name.split(".")
    section = _SECTION_ORDER[parts[0]]
    rest = parts[1:] if parts[0] == "mid_block" else parts[2:]
    block = 0 if parts[0] == "mid_block" else int(parts[1])
    key = [section, block]
    if rest:
        # resnets.i runs before attentions.i inside a block (down, mid and up blocks alike).
        sub, idx = rest[0], int(rest[1])
        key += [2 * idx + (1 if sub == "attentions" else 0)]
        tail = rest[2:]
        if tail:  # transformer_blocks.t[.attn1|attn2|ff]
            key += [int(tail[1])]
            key += [{"attn1": 1, "attn2": 2, "ff": 3}.get(tail[2], 0) if len(tail) > 2 else 0]
    return tuple(key)


def unet_layers(unet: torch.nn.Module) -> list[UNetLayer]:
    """Every traceable layer of `unet`, sorted in forward order (blocks before their children)."""
    compiled = {kind: re.compile(pattern) for kind, pattern in UNET_TEMPLATES.items()}
    layers = []
    for name, _ in unet.named_modules():
        for kind, pattern in compiled.items():
            if pattern.fullmatch(name):
                layers.append(UNetLayer(name=name, kind=kind, order=_order_key(name)))
                break
    return sorted(layers, key=lambda layer: layer.order)


@dataclass(frozen=True)
class UNetCell:
    """What one traced UNet cell restores.

    Attributes:
        label: the layer named in the results (the window's centre, or the set joined by "+").
        state: the kind of the layer (resnet / attn1 / attn2 / ff / transformer / block) or "set".
        modules: module names whose outputs are restored at every UNet call.
    """

    label: str
    state: str
    modules: tuple[str, ...]


def window(items: list, index: int, k: int) -> list:
    """The k consecutive items centred on items[index] (ROME's window), clipped at both ends."""
    lo = max(0, index - k // 2)
    hi = min(len(items), index - (-k // 2))
    return items[lo:hi]


def select_unet_cells(layers: list[UNetLayer], patterns: list[str] | None, k: int = 1) -> list[UNetCell]:
    """Cells for the given --layers patterns.

    A pattern is a kind (every layer of that kind, e.g. "attn2"), a glob over module names
    ("up_blocks.*.attn1"), or a "+"-joined list of names/globs restoring that set as one cell.
    `k` > 1 restores a window of k consecutive layers of the same kind around each selected layer.
    None selects every layer. Raises UnknownLayerError naming a pattern that matches nothing.
    """
    if k < 1:
        raise InvalidInputError(f"--window must be >= 1 (got {k})")
    by_kind: dict[str, list[str]] = {}
    for layer in layers:
        by_kind.setdefault(layer.kind, []).append(layer.name)
    kind_of = {layer.name: layer.kind for layer in layers}
    names = [layer.name for layer in layers]
    cells: list[UNetCell] = []
    seen: set[str] = set()

    def matching(pattern: str) -> list[str]:
        if pattern in by_kind:
            return list(by_kind[pattern])
        found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise UnknownLayerError(
                f"--layers {pattern!r} matches no traceable UNet layer; give a kind "
                f"({', '.join(UNET_KINDS)}) or a glob over module names such as 'up_blocks.*.attn1' "
                f"(first layers: {', '.join(names[:4])}, ...)"
            )
        return found

    for pattern in patterns or list(UNET_KINDS):
        pattern = pattern.strip()
        if not pattern:
            continue
        if "+" in pattern:
            members: list[str] = []
            for part in pattern.split("+"):
                members += [m for m in matching(part.strip()) if m not in members]
            label = "+".join(members)
            if label not in seen:
                seen.add(label)
                cells.append(UNetCell(label=label, state="set", modules=tuple(members)))
            continue
        for name in matching(pattern):
            if name in seen:
                continue
            seen.add(name)
            kind = kind_of[name]
            same = by_kind[kind]
            members = window(same, same.index(name), k) if k > 1 else [name]
            cells.append(UNetCell(label=name, state=kind, modules=tuple(members)))
    if not cells:
        raise UnknownLayerError("--layers selected no layer; give a kind or a glob over module names")
    return cells


def parse_text_states(patterns: list[str] | None) -> list[str]:
    """Text-encoder states from --layers (residual, attn, mlp; default all three)."""
    if not patterns:
        return list(TEXT_STATES)
    states = []
    for pattern in patterns:
        for part in pattern.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in TEXT_STATES:
                raise UnknownLayerError(
                    f"--layers {part!r} is not a text-encoder state; use residual, attn or mlp "
                    "(comma-separated for several)"
                )
            if part not in states:
                states.append(part)
    return states
