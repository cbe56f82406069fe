"""LocoEdit: the closed-form solve against an independent least-squares solve (and a zero gradient), its
keys against the text encoder at the recorded positions, the Edit record (apply/revert bitwise,
save/load) on every family and the built-in model, a UNet LoRA diffusers loads; neuron-level LocoEdit's
weight form against its runtime form; the CLI's --layers."""

from __future__ import annotations

import pytest
import torch

from locedit import Edit, load_pipeline
from locedit.cli import main
from locedit.edit.locoedit import (
    LocoEditSettings,
    cross_attention_modules,
    edit_keys,
    locoedit,
    locoedit_neurons,
    neuron_hooks,
    rank_neurons,
    welch_z,
)
from locedit.edit.unet_tuning import encode, predict, settings_dict
from locedit.errors import InvalidInputError
from locedit.trace.locogen import cross_attention_layers

from .test_baselines import check_record


def test_layer_order_is_locogens(load_tiny, family):
    unet = load_tiny(family).unet
    assert cross_attention_modules(unet) == cross_attention_layers(unet)
    assert cross_attention_modules(unet)[0].startswith("down_blocks.0")
    assert cross_attention_modules(unet)[-1].startswith("up_blocks.")


def test_equals_an_independent_solve_with_zero_gradient(load_tiny):
    pipe = load_tiny("sd1")
    lam = 0.3
    edit = locoedit(pipe, [("van gogh", "painting")], [2, 4], lam=lam)
    rows = edit_keys(pipe, [("van gogh", "painting")], LocoEditSettings())
    keys, values = rows["keys"], rows["values"]
    modules = cross_attention_modules(pipe.unet)
    assert edit.meta["layer_modules"] == [modules[2], modules[4]]
    assert len(edit.names) == 4
    for name in edit.names:
        w = edit.before[name].double()
        d_in = w.shape[1]
        # rows of ||A W'^T − B||²: keys -> W x_value, sqrt(λ) I -> W^T
        a = torch.cat([keys, lam**0.5 * torch.eye(d_in, dtype=torch.float64)])
        b = torch.cat([values @ w.T, lam**0.5 * w.T])
        want = torch.linalg.lstsq(a, b).solution.T
        got = edit.after[name].double()
        assert ((got - want).norm() / (want - w).norm()).item() < 1e-4, name
        # gradient of the objective at the stored (float32) solution, relative to its scale at W
        grad = lambda x, w=w: 2 * (x @ keys.T - w @ values.T) @ keys + 2 * lam * (x - w)  # noqa: E731
        assert (grad(want).norm() / grad(w).norm()).item() < 1e-8
        assert (grad(got).norm() / grad(w).norm()).item() < 1e-4


def test_keys_are_the_text_encoder_output_at_the_recorded_positions(load_tiny):
    pipe = load_tiny("sd2")
    settings = LocoEditSettings(templates=("{}", "a painting by {}"), positions="last+after")
    edit = locoedit(pipe, [("van gogh", "monet")], [0], settings=settings)
    rows = edit_keys(pipe, [("van gogh", "monet")], settings)
    assert edit.meta["key_positions"] == rows["key_positions"]
    assert edit.meta["stats"]["key_rows"] == len(rows["key_positions"]) == rows["keys"].shape[0]
    # "last+after": from the last subject token to the end of the context, in both captions
    assert rows["key_positions"][0] == ["van gogh", 2]
    for (caption, pos), key in zip(edit.meta["key_positions"], rows["keys"]):
        embeds, _ = pipe.encode_prompt(caption, "cpu", 1, False)
        assert torch.equal(embeds[0, pos].double(), key)
    for (caption, pos), value in zip(edit.meta["value_positions"], rows["values"]):
        embeds, _ = pipe.encode_prompt(caption, "cpu", 1, False)
        assert torch.equal(embeds[0, pos].double(), value)
    # the key captions' subject token is "gogh" (the last subject token)
    first_caption, first_pos = edit.meta["key_positions"][0]
    ids = pipe.tokenizer(first_caption).input_ids
    assert pipe.tokenizer.convert_ids_to_tokens(ids[first_pos]) == "gogh</w>"


def test_record_on_every_family(load_tiny, family, tmp_path):
    pipe = load_tiny(family)
    edit = locoedit(pipe, {"van gogh": "painting"}, [1])
    assert edit.meta["method"] == "locoedit" and edit.meta["layers"] == [1]
    assert edit.meta["stats"]["rel_error_max"] < 0.1
    check_record(edit, load_tiny(family), tmp_path)


def test_record_on_the_builtin_model(tmp_path):
    pipe = load_pipeline("builtin:shapes")
    edit = locoedit(pipe, [("red", "blue")], [4])
    assert [n.split(".attn2.")[1] for n in edit.names] == ["to_k.weight", "to_v.weight"]
    check_record(edit, load_pipeline("builtin:shapes"), tmp_path)


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
@pytest.mark.parametrize("fam", ["sd1", "sdxl"])
def test_unet_lora_loaded_by_diffusers_reproduces_the_edited_projections(load_tiny, tmp_path, fam, fmt):
    pipe = load_tiny(fam)
    edit = locoedit(pipe, [("van gogh", "painting")], [0, 2])
    report = edit.to_lora(tmp_path / "lora.safetensors", format=fmt)
    assert max(report["rel_errors"].values()) < 1e-6
    edit.apply(pipe)
    lora_pipe = load_tiny(fam)
    lora_pipe.load_lora_weights(str(tmp_path), weight_name="lora.safetensors")
    side = pipe.unet.config.sample_size
    cond, _ = encode(pipe, ["a photo of van gogh", "a cat"], side)
    states = cond.embeds
    with torch.no_grad():
        for module in edit.meta["layer_modules"]:
            for proj in ("to_k", "to_v"):
                want = pipe.unet.get_submodule(f"{module}.{proj}")(states)
                got = lora_pipe.unet.get_submodule(f"{module}.{proj}")(states)
                base = load_tiny(fam).unet.get_submodule(f"{module}.{proj}")(states)
                scale = want.abs().max()
                assert ((want - base).abs().max() / scale) > 1e-4  # the edit changes this projection
                assert ((want - got).abs().max() / scale) < 1e-5
        x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([900, 300])
        want, got = predict(pipe.unet, x, t, cond), predict(lora_pipe.unet, x, t, cond)
        assert ((want - got).abs().max() / want.abs().max()) < 1e-5


def test_welch_z_against_the_formula():
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # column 0: means 2 and 0.5, variances 1 and 0.5 -> (1.5) / sqrt(1/3 + 0.5/2)
    assert welch_z(a, b)[0].item() == pytest.approx(1.5 / (1 / 3 + 0.25) ** 0.5)
    with pytest.raises(InvalidInputError, match="at least two captions"):
        welch_z(a[:1], b)


@pytest.mark.parametrize("fam", ["sd1", "sdxl"])
def test_neuron_edit_weight_form_equals_the_runtime_replacement(load_tiny, tmp_path, fam):
    pipe = load_tiny(fam)
    edit = locoedit_neurons(pipe, [("van gogh", "painting")], [1, 2], k=16)
    ranked = rank_neurons(pipe, [("van gogh", "painting")], [1, 2])
    assert edit.meta["neurons"] == ranked[:16]
    assert all(abs(a["z"]) >= abs(b["z"]) for a, b in zip(ranked, ranked[1:]))
    assert any(n["module"].endswith("to_v") for n in edit.meta["neurons"])  # the bias path is exercised
    side = pipe.unet.config.sample_size
    cond, _ = encode(pipe, ["a photo of van gogh", "a cat"], side)
    x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 300])
    with torch.no_grad():
        base = predict(pipe.unet, x, t, cond)
        with neuron_hooks(pipe, edit.meta["neurons"]):
            runtime = predict(pipe.unet, x, t, cond)
        edit.apply(pipe)
        weights = predict(pipe.unet, x, t, cond)
    scale = base.abs().max()
    assert ((runtime - base).abs().max() / scale) > 1e-4  # the replacement changes the prediction
    assert ((runtime - weights).abs().max() / scale) < 1e-5
    check_record(edit, load_tiny(fam), tmp_path)
    with pytest.raises(ValueError, match="linear weights only"):
        edit.to_lora(tmp_path / "l.safetensors")


def test_bad_layers_are_refused(load_tiny):
    pipe = load_tiny("sd1")
    n = len(cross_attention_modules(pipe.unet))
    with pytest.raises(InvalidInputError, match=f"index {n} is out of range"):
        locoedit(pipe, [("cat", "dog")], [n])
    with pytest.raises(InvalidInputError, match="no cross-attention layers given"):
        locoedit(pipe, [("cat", "dog")], [])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layers", "99"], "index 99 is out of range"),
        (["--layers", "two"], "must be cross-attention layer indices"),
        ([], "needs --layers"),
        (["--layers", "auto"], "give --locogen RUNDIR"),
    ],
)
def test_cli_bad_layers_exit_2_with_one_line(tiny_dirs, tmp_path, capsys, extra, message):
    argv = ["edit", str(tiny_dirs["sd1"]), "--method", "locoedit", "--remove", "cat", "--to", "dog"]
    code = main(argv + extra + ["--out", str(tmp_path / "e.safetensors")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.safetensors").exists()


def test_cli_writes_the_edit(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "e.safetensors"
    argv = ["edit", str(tiny_dirs["sd1"]), "--method", "locoedit", "--remove", "cat", "--to", "dog"]
    assert main(argv + ["--layers", "1", "3", "--lam", "0.2", "--out", str(out), "--quiet"]) == 0
    edit = Edit.load(out)
    assert edit.meta["layers"] == [1, 3] and edit.meta["settings"]["lam"] == 0.2
    assert "locoedit: 'cat' -> 'dog'" in capsys.readouterr().out


@pytest.mark.parametrize("method, shown", [("locoedit", False), ("locoedit-neurons", True)])
def test_summary_shows_neurons_only_for_the_neuron_method(method, shown):
    # the meta as locoedit / locoedit_neurons record it: every LocoEditSettings field under "settings"
    meta = {"method": method, "pairs": [["cat", "dog"]], "settings": settings_dict(LocoEditSettings())}
    summary = Edit({}, {}, meta).summary()
    assert "lam=0.1" in summary
    assert ("neurons=8" in summary) == shown


def test_the_top_level_package_exports_locoedit():
    import locedit
    from locedit import LocoEditSettings as top_settings
    from locedit import locoedit as top_locoedit
    from locedit import locoedit_neurons as top_neurons

    assert (top_locoedit, top_neurons, top_settings) == (locoedit, locoedit_neurons, LocoEditSettings)
    assert {"locoedit", "locoedit_neurons", "LocoEditSettings"} <= set(locedit.__all__)
