"""Known-answer tests: tiny pipelines where, by construction, the text reaches the image through
one place only; the tracer must find exactly that place."""

from __future__ import annotations

import torch

from locedit.probes import Probe
from locedit.scorers import PixelScorer
from locedit.trace import GenerationSettings, Tracer, TraceSettings, select_unet_cells
from locedit.trace.engine import effect

PROBE = Probe("a photo of a red cat", "cat", "object")


def _effects(tracer, result, cells):
    return [effect(result.clean, result.corrupted, r) for r in result.restored]


def test_unet_single_cross_attention_path(load_tiny):
    """Every attn2 but one has zero to_k/to_v weights, so its output is a constant (the to_out bias)
    that does not depend on the text: text reaches the image through the planted layer only.
    The tracer must give that layer effect 1 and every other attn2 effect 0."""
    pipe = load_tiny("sd1")
    tracer = Tracer(pipe, PixelScorer(), GenerationSettings(steps=2, guidance=5.0), TraceSettings())
    cells = select_unet_cells(tracer.layers, ["attn2"])
    planted = "mid_block.attentions.0.transformer_blocks.0.attn2"
    modules = dict(pipe.unet.named_modules())
    with torch.no_grad():
        for cell in cells:
            if cell.label != planted:
                modules[cell.label].to_k.weight.zero_()
                modules[cell.label].to_v.weight.zero_()
    result = tracer.run_unet_unit(PROBE, 0, 3.0, cells)
    assert result.clean - result.corrupted > 0
    effects = dict(zip([c.label for c in cells], _effects(tracer, result, cells)))
    assert effects.pop(planted) == 1.0  # restoring it makes the row bitwise clean
    assert effects and all(e == 0.0 for e in effects.values()), effects


def test_text_encoder_single_attention_path(load_tiny):
    """Self-attention out-projections are zeroed in every text-encoder layer but layer 1, so tokens
    are processed independently except in layer 1's attention. Known answers:
    residual after layer 0 at the subject token restores everything (effect 1); states at tokens
    before the subject never change (causal mask), so restoring them does nothing (effect 0); the
    attention output of every layer but 1 is zero in every row (effect 0); and only layer 1's
    attention at the subject token and after it carries any effect."""
    pipe = load_tiny("sd1")
    tracer = Tracer(pipe, PixelScorer(), GenerationSettings(steps=2, guidance=5.0), TraceSettings())
    handle = tracer.handles[0]
    with torch.no_grad():
        for layer in range(handle.num_layers):
            if layer != 1:
                handle.module("attn_out", layer).weight.zero_()
                handle.module("attn_out", layer).bias.zero_()
    start, end = tracer.spans(PROBE)[0]
    assert end - start == 1
    cells = tracer.text_cells(PROBE, ["residual", "attn", "mlp"])
    assert len(cells) == 3 * handle.num_layers * (tracer.num_tokens(PROBE) + 1)  # + the padding row
    effects = {}
    for first in range(0, len(cells), 64):
        chunk = cells[first : first + 64]
        result = tracer.run_text_unit(PROBE, 0, 3.0, chunk)
        assert result.clean - result.corrupted > 0
        for cell, e in zip(chunk, _effects(tracer, result, chunk)):
            effects[(cell.state, cell.layer, cell.token)] = e
    assert effects[("residual", 0, start)] == 1.0
    for (state, layer, token), e in effects.items():
        if token < start:
            assert e == 0.0, (state, layer, token, e)
        if state == "attn" and layer != 1:
            assert e == 0.0, (state, layer, token, e)
    attn1 = [effects[("attn", 1, t)] for t in range(start, tracer.num_tokens(PROBE))]
    assert max(abs(e) for e in attn1) > 0
    # After layer 1 the corrupted subject has already leaked into later tokens: not a full restore.
    assert effects[("residual", 3, start)] < 1.0
