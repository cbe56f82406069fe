"""Exact LoRA export: diffusers loads it and reproduces the edited embeddings; kohya keys and shapes.

How each other client (AUTOMATIC1111, ComfyUI/Forge, kohya sd-scripts) applies the file: test_lora_clients.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from locedit import quickfix
from locedit.models import text_encoders


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
@pytest.mark.parametrize("fam", ["sd1", "sd2", "sdxl"])
def test_lora_loaded_by_diffusers_matches_edited_pipeline(load_tiny, tmp_path, fam, fmt):
    pipe = load_tiny(fam)
    edit = quickfix(pipe, [("van gogh", "painting")], preserve=["monet"])
    report = edit.to_lora(tmp_path / "lora.safetensors", format=fmt)
    for name in edit.names:
        assert report["rel_errors"][name] < 1e-6
    edit.apply(pipe)
    lora_pipe = load_tiny(fam)
    lora_pipe.load_lora_weights(
        str(tmp_path), weight_name="lora.safetensors"
    )  # the form every diffusers version reads offline
    captions = ["a photo of van gogh", "a picture of monet in a garden"]
    with torch.no_grad():
        for ref, got in zip(text_encoders(pipe), text_encoders(lora_pipe)):
            ids = ref.tokenize(captions)
            a, b = ref.encoder(ids)[0], got.encoder(ids)[0]
            diff = ((a - b).abs().max() / a.abs().max()).item()
            print(f"{fam} {fmt} {ref.name}: max relative embedding difference {diff:.1e}")
            assert diff < 1e-5


def test_kohya_keys_and_shapes(load_tiny, tmp_path):
    pipe = load_tiny("sdxl")
    edit = quickfix(pipe, [("van gogh", "painting")], module="attn_out", positions="last")
    report = edit.to_lora(tmp_path / "k.safetensors", format="kohya")
    sd = load_file(str(tmp_path / "k.safetensors"))
    hidden = pipe.text_encoder.config.hidden_size
    for prefix, name in zip(("lora_te1", "lora_te2"), edit.names):
        base = f"{prefix}_text_model_encoder_layers_0_self_attn_out_proj"
        rank = report["ranks"][name]
        assert rank == 4  # one key row per template: ΔW has rank 4
        assert sd[f"{base}.lora_down.weight"].shape == (rank, hidden)
        assert sd[f"{base}.lora_up.weight"].shape == (hidden, rank)
        assert sd[f"{base}.alpha"].item() == rank
    # the OpenCLIP encoder's out_proj has zero q/k/v companions (for AUTOMATIC1111), the first's none
    for proj in ("q_proj", "k_proj", "v_proj"):
        base = f"lora_te2_text_model_encoder_layers_0_self_attn_{proj}"
        assert sd[f"{base}.lora_down.weight"].shape == (4, hidden) and not sd[f"{base}.lora_down.weight"].any()
        assert sd[f"{base}.lora_up.weight"].shape == (hidden, 4) and not sd[f"{base}.lora_up.weight"].any()
        assert sd[f"{base}.alpha"].item() == 4
    assert len(sd) == 6 + 9
    sd1 = load_tiny("sd1")
    quickfix(sd1, [("van gogh", "painting")], module="attn_out").to_lora(tmp_path / "k1.safetensors", format="kohya")
    assert all(
        k.startswith("lora_te_text_model_encoder_layers_0_self_attn_out_proj.")
        for k in load_file(str(tmp_path / "k1.safetensors"))
    )
    # a v_proj edit (the default) of CLIP's Linear projections gets one zero out_proj companion: diffusers'
    # kohya loader recognises a text-encoder file by its out_proj key
    quickfix(sd1, [("van gogh", "painting")]).to_lora(tmp_path / "k2.safetensors", format="kohya")
    k2 = load_file(str(tmp_path / "k2.safetensors"))
    assert {k.split(".")[0] for k in k2} == {
        f"lora_te_text_model_encoder_layers_0_self_attn_{p}" for p in ("v_proj", "out_proj")
    }
    assert not k2["lora_te_text_model_encoder_layers_0_self_attn_out_proj.lora_up.weight"].any()


@pytest.mark.parametrize("rank", [None, 2])
def test_reported_errors_are_those_of_the_stored_factors(load_tiny, tmp_path, rank):
    edit = quickfix(load_tiny("sd1"), [("van gogh", "painting")])
    report = edit.to_lora(tmp_path / "d.safetensors", rank=rank)  # diffusers format: ΔW = B @ A
    sd = load_file(str(tmp_path / "d.safetensors"))
    with safe_open(str(tmp_path / "d.safetensors"), framework="pt") as f:
        stored = json.loads(f.metadata()["locedit.lora"])["rel_errors"]
    for name in edit.names:
        base = name.removesuffix(".weight")
        want = edit.delta(name)
        got = sd[f"{base}.lora_B.weight"].double() @ sd[f"{base}.lora_A.weight"].double()
        err = ((got - want).norm() / want.norm()).item()
        print(f"rank {rank}: reported {report['rel_errors'][name]:.3e}, stored factors {err:.3e}")
        assert report["rel_errors"][name] == pytest.approx(err, rel=1e-6)
        assert stored[name] == report["rel_errors"][name]
    if rank is None:  # float32 rounding of the factors, not the float64 SVD's 1e-15
        assert all(1e-10 < e < 1e-6 for e in report["rel_errors"].values())


def test_truncated_rank_reports_error(load_tiny, tmp_path):
    edit = quickfix(load_tiny("sd1"), [("van gogh", "painting")], module="attn_out")
    full = edit.to_lora(tmp_path / "full.safetensors")
    name = edit.names[0]
    low = edit.to_lora(tmp_path / "low.safetensors", rank=2)
    assert low["ranks"][name] == 2 < full["ranks"][name]
    assert low["rel_errors"][name] > 1e-3 > full["rel_errors"][name]
    with pytest.raises(ValueError, match="unknown LoRA format"):
        edit.to_lora(tmp_path / "x.safetensors", format="ckpt")
    assert not (tmp_path / "x.safetensors").exists()


def test_kohya_export_needs_the_model_family(load_tiny, tmp_path):
    edit = quickfix(load_tiny("sd1"), [("van gogh", "painting")], corpus_weight=0, corpus_keys=0)
    del edit.meta["family"]  # kohya prefixes (lora_te vs lora_te1) and A1111's companions depend on it
    with pytest.raises(ValueError, match="family"):
        edit.to_lora(tmp_path / "k.safetensors", format="kohya")
    assert not (tmp_path / "k.safetensors").exists()
    edit.to_lora(tmp_path / "d.safetensors")  # the diffusers format does not
    assert (tmp_path / "d.safetensors").exists()
