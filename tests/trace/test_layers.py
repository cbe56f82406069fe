"""Traceable-layer enumeration from the name templates, selection by kind/glob/set, windows."""

from __future__ import annotations

from collections import Counter

import pytest
from diffusers import UNet2DConditionModel

from locedit.trace.layers import UnknownLayerError, parse_text_states, select_unet_cells, unet_layers, window


@pytest.fixture(scope="module")
def sd15_shaped_unet():
    """SD-1.5's block layout (3 cross-attention down blocks + 1 plain, 2 layers per block) at tiny width."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )


def test_sd15_layout_has_95_traceable_layers(sd15_shaped_unet):
    layers = unet_layers(sd15_shaped_unet)
    kinds = Counter(layer.kind for layer in layers)
    assert kinds == {"block": 9, "resnet": 22, "transformer": 16, "attn1": 16, "attn2": 16, "ff": 16}
    assert len(layers) == 95
    names = [layer.name for layer in layers]
    # Forward order: down blocks, then the mid block (resnet 0, attention, resnet 1), then up blocks.
    assert (
        names.index("mid_block.resnets.0")
        < names.index("mid_block.attentions.0.transformer_blocks.0.attn2")
        < names.index("mid_block.resnets.1")
        < names.index("up_blocks.0")
    )
    assert (
        names.index("down_blocks.0.resnets.0")
        < names.index("down_blocks.0.attentions.0.transformer_blocks.0")
        < names.index("down_blocks.0.resnets.1")
    )


def test_selection_kinds_globs_sets_and_windows(sd15_shaped_unet):
    layers = unet_layers(sd15_shaped_unet)
    attn2 = select_unet_cells(layers, ["attn2"])
    assert len(attn2) == 16 and all(c.state == "attn2" and len(c.modules) == 1 for c in attn2)
    up_attn1 = select_unet_cells(layers, ["up_blocks.*.attn1"])
    assert len(up_attn1) == 9 and all(c.label.startswith("up_blocks") for c in up_attn1)
    one = select_unet_cells(layers, ["down_blocks.0+mid_block"])
    assert len(one) == 1 and one[0].modules == ("down_blocks.0", "mid_block") and one[0].state == "set"
    windows = select_unet_cells(layers, ["attn2"], k=3)
    assert len(windows[0].modules) == 2 and len(windows[1].modules) == 3 and windows[1].label in windows[1].modules
    assert [c.label for c in windows] == [c.label for c in attn2]
    assert len(select_unet_cells(layers, None)) == 95
    with pytest.raises(UnknownLayerError, match="matches no traceable UNet layer"):
        select_unet_cells(layers, ["attn3"])


def test_window_and_text_states():
    assert window(list(range(10)), 0, 3) == [0, 1] and window(list(range(10)), 5, 4) == [3, 4, 5, 6]
    assert parse_text_states(None) == ["residual", "attn", "mlp"]
    assert parse_text_states(["attn,mlp"]) == ["attn", "mlp"]
    with pytest.raises(UnknownLayerError):
        parse_text_states(["attn2"])
