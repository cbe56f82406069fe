"""Lockstep engine: bitwise identities of restoring everything / nothing, lockstep batch vs
one-at-a-time runs, nested block outputs, and the CFG row layout."""

from __future__ import annotations

import pytest
import torch

from locedit.probes import Probe
from locedit.scorers import PixelScorer
from locedit.trace import GenerationSettings, Tracer, TraceSettings, UNetCell, select_unet_cells
from locedit.trace.engine import effect

PROBE = Probe("a photo of a red cat", "cat", "object")


def _tracer(pipe, guidance=5.0, restore="cond", steps=2):
    return Tracer(
        pipe, PixelScorer(), GenerationSettings(steps=steps, guidance=guidance), TraceSettings(restore=restore)
    )


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_restore_all_blocks_is_clean_and_nothing_is_corrupted_bitwise(load_tiny, family):
    tracer = _tracer(load_tiny(family))
    blocks = tuple(layer.name for layer in tracer.layers if layer.kind == "block")
    assert any(b.startswith("down_blocks") for b in blocks)  # down blocks return (hidden, skip-states)
    cells = [
        UNetCell("all", "set", blocks),
        UNetCell("none", "set", ()),
        UNetCell(
            "down",
            "set",
            tuple(b for b in blocks if b.startswith("down_blocks"))
            + tuple(
                layer.name
                for layer in tracer.layers
                if layer.kind == "attn2" and not layer.name.startswith("down_blocks")
            )
            + (("add_embedding",) if family == "sdxl" else ()),
        ),  # SDXL's pooled text enters the time embedding
    ]
    result = tracer.run_unet_unit(PROBE, 0, 3.0, cells)
    images = result.images
    assert not torch.equal(images[0], images[1]), "corruption must change the image for this test to mean anything"
    # Same batch, same arithmetic per row: these identities are bitwise.
    assert torch.equal(images[2], images[0])
    assert torch.equal(images[3], images[1])
    # Restoring every down block's output *and its skip states* (a tuple nested in the block's
    # output tuple), plus every later cross-attention (where text enters again), reproduces the
    # clean image only if the skip states the up blocks consume were patched too.
    assert torch.equal(images[4], images[0])
    assert result.restored[0] == result.clean and result.restored[1] == result.corrupted
    assert effect(result.clean, result.corrupted, result.restored[0]) == 1.0
    assert effect(result.clean, result.corrupted, result.restored[1]) == 0.0


def test_restore_both_halves_also_clean(load_tiny):
    tracer = _tracer(load_tiny("sd1"), restore="both")
    blocks = tuple(layer.name for layer in tracer.layers if layer.kind == "block")
    images = tracer.run_unet_unit(PROBE, 1, 3.0, [UNetCell("all", "set", blocks)]).images
    assert torch.equal(images[2], images[0])


def test_lockstep_batch_matches_one_at_a_time(load_tiny):
    """Each restored row of a lockstep batch equals a separate run restoring only that layer.

    Tolerance: 1e-5 (float32). On CPU the rows usually agree bitwise, but a batch of different size
    may take another GEMM/conv blocking path, so bitwise equality is not guaranteed across batch sizes.
    """
    tracer = _tracer(load_tiny("sd1"))
    cells = select_unet_cells(tracer.layers, ["attn2", "resnet"])[:5]
    batched = tracer.run_unet_unit(PROBE, 0, 3.0, cells)
    for j, cell in enumerate(cells):
        single = tracer.run_unet_unit(PROBE, 0, 3.0, [cell])
        torch.testing.assert_close(single.images[0], batched.images[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.images[1], batched.images[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.images[2], batched.images[2 + j], atol=1e-5, rtol=0)


def test_corruption_only_in_conditional_branch_and_only_subject_tokens(load_tiny):
    tracer = _tracer(load_tiny("sd1"))
    embeds = tracer.encode(PROBE, 3, tracer.noise(PROBE, 0, 3.0))
    start, end = tracer.spans(PROBE)[0]
    cond = embeds["prompt_embeds"]
    assert torch.equal(cond[1], cond[2])  # every corrupted row gets the same noise
    # Causal text encoder: tokens before the subject are untouched, the subject's are changed.
    assert torch.equal(cond[0, :start], cond[1, :start])
    assert not torch.equal(cond[0, start:end], cond[1, start:end])
    neg = embeds["negative_prompt_embeds"]
    assert torch.equal(neg[0], neg[1]) and torch.equal(neg[0], neg[2])
    # The clean row equals the pipeline's own encoding.
    ref, _ = tracer.pipe.encode_prompt(PROBE.prompt, tracer.device, 1, False)
    assert torch.equal(cond[0], ref[0])


def test_noise_scale_is_nu_times_embedding_std(load_tiny):
    tracer = _tracer(load_tiny("sd1"))
    weight = tracer.handles[0].module("token_embedding").weight
    assert tracer.embedding_std[0] == pytest.approx(float(weight.detach().std()))
    eps = torch.cat(
        [tracer.noise(Probe(f"a photo of a {w}", w, "object"), s, 3.0)[0] for w in ("cat", "dog") for s in range(20)]
    )
    assert float(eps.std()) == pytest.approx(3.0 * tracer.embedding_std[0], rel=0.15)
    assert torch.equal(tracer.noise(PROBE, 0, 3.0)[0], tracer.noise(PROBE, 0, 3.0)[0])


def test_no_guidance_layout(load_tiny):
    tracer = _tracer(load_tiny("sd1"), guidance=1.0)
    blocks = tuple(layer.name for layer in tracer.layers if layer.kind == "block")
    images = tracer.run_unet_unit(PROBE, 0, 3.0, [UNetCell("all", "set", blocks)]).images
    assert torch.equal(images[2], images[0])


def test_restores_at_every_unet_call_with_a_two_call_scheduler(load_tiny):
    """Heun calls the UNet twice per step; restoration is per UNet call, so the identity still holds."""
    from diffusers import HeunDiscreteScheduler

    pipe = load_tiny("sd1")
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    tracer = _tracer(pipe)
    calls = []
    handle = pipe.unet.register_forward_hook(lambda m, a, o: calls.append(1))
    blocks = tuple(layer.name for layer in tracer.layers if layer.kind == "block")
    images = tracer.run_unet_unit(
        PROBE, 0, 3.0, [UNetCell("all", "set", blocks), UNetCell("up", "set", blocks[-1:])]
    ).images
    handle.remove()
    assert len(calls) > tracer.generation.steps
    assert not torch.equal(images[0], images[1])
    assert torch.equal(images[2], images[0]) and torch.equal(images[3], images[0])


def test_sdxl_text_cells_cover_both_encoders(load_tiny):
    tracer = _tracer(load_tiny("sdxl"))
    cells = tracer.text_cells(PROBE, ["residual"])
    assert {c.encoder for c in cells} == {0, 1}
    n_tok = tracer.num_tokens(PROBE)
    assert len(cells) == sum(h.num_layers for h in tracer.handles) * (n_tok + 1)  # + the padding row
    pad = [c for c in cells if c.token == n_tok]
    assert all(c.restored_positions == tuple(range(n_tok, tracer.handles[c.encoder].context_length)) for c in pad)
    start, _ = tracer.spans(PROBE)[0]
    chosen = [c for c in cells if c.token in (0, start) and c.layer == 0]
    result = tracer.run_text_unit(PROBE, 0, 3.0, chosen)
    assert result.clean != result.corrupted
    for cell, restored in zip(chosen, result.restored):
        if cell.token == 0:  # BOS cannot see the subject (causal mask): restoring it changes nothing
            assert restored == result.corrupted
    # Encoder 2 feeds both the sequence and the pooled embedding; its subject state matters.
    assert any(r != result.corrupted for c, r in zip(chosen, result.restored) if c.encoder == 1 and c.token == start)
