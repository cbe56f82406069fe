"""The baselines (ESD-x/u, Concept Ablation, UCE): Edit records that apply, revert, save and load;
losses that fall; UCE against an independent least-squares solve; UNet LoRAs that diffusers loads;
the CLI's --method flags."""

from __future__ import annotations

import time

import pytest
import torch

from locedit import AblateSettings, Edit, ESDSettings, ablate, esd, uce
from locedit.cli import main
from locedit.edit.targets import get_parameter
from locedit.edit.unet_tuning import encode, predict

# Few denoising steps and anchor latents: seconds on the tiny models.
FAST_ESD = ESDSettings(sample_steps=4)
FAST_ABLATE = AblateSettings(anchor_images=4, anchor_steps=2, batch=2)


def unet_state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def check_record(edit: Edit, fresh, tmp_path) -> None:
    """The edit saves and loads unchanged, applies to a fresh pipeline (only its tensors change) and
    reverts bitwise."""
    loaded = Edit.load(edit.save(tmp_path / "edit.safetensors"))
    assert loaded.meta == edit.meta
    assert all(
        torch.equal(loaded.after[n], edit.after[n]) and torch.equal(loaded.before[n], edit.before[n])
        for n in edit.names
    )
    base = unet_state(fresh)
    loaded.apply(fresh)
    for name in edit.names:
        assert torch.equal(get_parameter(fresh, name).detach(), edit.after[name])
    changed = {f"unet.{k}" for k, v in unet_state(fresh).items() if not torch.equal(v, base[k])}
    assert changed == set(edit.names)
    loaded.revert(fresh)
    assert_same(unet_state(fresh), base)


def assert_loss_falls(edit: Edit) -> None:
    stats = edit.meta["stats"]
    print(f"{edit.meta['method']}: loss {stats['loss_first']:.3g} -> {stats['loss_last']:.3g}")
    assert len(stats["loss"]) == edit.meta["settings"]["steps"]
    assert stats["loss_last"] < 0.6 * stats["loss_first"]  # means of the first and last tenth of the steps


@pytest.mark.parametrize("variant", ["x", "u"])
def test_esd_trains_its_variant_and_makes_an_edit(load_tiny, tmp_path, variant):
    pipe = load_tiny("sd1")
    base = unet_state(pipe)
    # ESD-u also moves the latents it trains on (drawn with the edited model): its loss falls more slowly
    edit = esd(
        pipe, "van gogh", variant, settings=FAST_ESD, steps=30 if variant == "x" else 60, lr=1e-3, progress=False
    )
    assert_same(unet_state(pipe), base)  # the pipeline is left untouched
    assert edit.meta["method"] == f"esd-{variant}" and edit.meta["pairs"] == [["van gogh", None]]
    assert all(n.startswith("unet.") for n in edit.names)
    if variant == "x":  # the attn2 projections' weights only: a LoRA carries them
        assert all(".attn2." in n and n.endswith(".weight") for n in edit.names)
        assert {n.split(".attn2.")[1] for n in edit.names} == {
            "to_q.weight",
            "to_k.weight",
            "to_v.weight",
            "to_out.0.weight",
        }
    else:
        assert not any(".attn2." in n for n in edit.names)
        assert any(n.endswith(".bias") for n in edit.names) and any(edit.after[n].dim() == 4 for n in edit.names)
    assert_loss_falls(edit)
    check_record(edit, load_tiny("sd1"), tmp_path)


def test_esd_is_deterministic_given_a_seed(load_tiny):
    pipe = load_tiny("sd1")
    run = lambda seed: esd(pipe, "van gogh", "x", settings=FAST_ESD, steps=3, lr=1e-3, seed=seed, progress=False)  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a.after[n], b.after[n]) for n in a.names)
    assert a.meta["stats"]["loss"] == b.meta["stats"]["loss"]
    assert any(not torch.equal(a.after[n], c.after[n]) for n in a.names)


@pytest.mark.parametrize("method", ["esd", "ablate"])
def test_snapshots_equal_shorter_runs(load_tiny, method):
    """The edit handed to on_snapshot after k steps is the edit of a run of k steps (tensors, loss
    curve, settings): one training run serves a sweep of step counts."""
    pipe = load_tiny("sd1")

    def run(steps: int, **kw) -> Edit:
        if method == "esd":
            return esd(pipe, "van gogh", "x", settings=FAST_ESD, steps=steps, lr=1e-3, progress=False, **kw)
        return ablate(pipe, "van gogh", "painting", settings=FAST_ABLATE, steps=steps, lr=1e-2, progress=False, **kw)

    got = {}
    full = run(5, snapshots=(2, 4, 9), on_snapshot=lambda k, e: got.setdefault(k, e))
    assert sorted(got) == [2, 4]  # 9 is beyond the run
    for k, snap in got.items():
        short = run(k)
        assert snap.names == short.names
        assert all(torch.equal(snap.after[n], short.after[n]) for n in snap.names)
        assert snap.meta["stats"]["loss"] == short.meta["stats"]["loss"]
        assert snap.meta["settings"] == short.meta["settings"] and snap.meta["settings"]["steps"] == k
        assert 0 < snap.meta["seconds"] < full.meta["seconds"]
    assert any(not torch.equal(got[2].after[n], full.after[n]) for n in full.names)


@pytest.mark.parametrize("method", ["esd", "ablate"])
def test_a_snapshot_can_end_the_training(load_tiny, method):
    """on_snapshot returning True ends the run there: the returned edit is the k-step one, and time
    spent in on_snapshot is not counted in its seconds."""
    pipe = load_tiny("sd1")

    def run(steps: int, **kw) -> Edit:
        if method == "esd":
            return esd(pipe, "van gogh", "x", settings=FAST_ESD, steps=steps, lr=1e-3, progress=False, **kw)
        return ablate(pipe, "van gogh", "painting", settings=FAST_ABLATE, steps=steps, lr=1e-2, progress=False, **kw)

    seen = []

    def slow_stop(k: int, edit: Edit) -> bool:
        seen.append(k)
        time.sleep(0.3)
        return k == 3

    t0 = time.perf_counter()
    stopped = run(8, snapshots=(1, 3, 6), on_snapshot=slow_stop)
    wall = time.perf_counter() - t0
    assert seen == [1, 3]  # nothing after the stop
    short = run(3)
    assert stopped.meta["settings"]["steps"] == 3 and stopped.meta["stats"]["loss"] == short.meta["stats"]["loss"]
    assert all(torch.equal(stopped.after[n], short.after[n]) for n in short.names)
    assert stopped.meta["seconds"] <= wall - 0.6  # the time in on_snapshot (two 0.3 s sleeps) is left out


@pytest.mark.parametrize("variant", ["kv", "full"])
def test_ablation_trains_its_variant_and_makes_an_edit(load_tiny, tmp_path, variant):
    pipe = load_tiny("sd1")
    base = unet_state(pipe)
    edit = ablate(pipe, "van gogh", "painting", variant, settings=FAST_ABLATE, steps=30, lr=1e-2, progress=False)
    assert_same(unet_state(pipe), base)
    assert edit.meta["method"] == f"ablate-{variant}" and edit.meta["pairs"] == [["van gogh", "painting"]]
    assert "a photo of van gogh" in edit.meta["fit_captions"] and "a photo of painting" in edit.meta["fit_captions"]
    if variant == "kv":
        assert edit.names and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for n in edit.names)
    else:
        assert len(edit.names) > 100
    assert_loss_falls(edit)
    check_record(edit, load_tiny("sd1"), tmp_path)


def test_ablation_against_the_frozen_model_also_learns(load_tiny):
    settings = AblateSettings(anchor_images=4, anchor_steps=2, batch=2, anchor_target="frozen")
    edit = ablate(load_tiny("sd1"), "van gogh", "painting", settings=settings, steps=30, lr=1e-2, progress=False)
    assert_loss_falls(edit)


def _last_token_embeddings(pipe, captions: list[str]) -> torch.Tensor:
    """float64 (N, D) last-hidden-state rows at each caption's last token before the end token
    (computed without locedit: the tokenizer and the text encoder called directly)."""
    ids = pipe.tokenizer(
        captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    )
    last = ids.attention_mask.sum(1) - 2
    with torch.no_grad():
        hidden = pipe.text_encoder(ids.input_ids)[0].double()
    return hidden[torch.arange(len(captions)), last]


def test_uce_equals_an_independent_least_squares_solve(load_tiny):
    pipe = load_tiny("sd1")
    templates = ("{}", "a photo of {}")  # the concept ends each caption: its last token is the one before EOS
    lam, preserve_scale = 0.3, 0.7
    from locedit.edit.uce import UCESettings

    settings = UCESettings(lam=lam, preserve_scale=preserve_scale, templates=templates)
    edit = uce(pipe, [("van gogh", "painting"), ("monet", "sketch")], preserve=["cat", "dog"], settings=settings)
    keys = _last_token_embeddings(pipe, [t.format(k) for k in ("van gogh", "monet") for t in templates])
    goals = _last_token_embeddings(pipe, [t.format(v) for v in ("painting", "sketch") for t in templates])
    kept = _last_token_embeddings(pipe, [t.format(c) for c in ("cat", "dog") for t in templates])
    attn2 = [n for n, _ in pipe.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    assert sorted(edit.names) == sorted(f"unet.{n}.weight" for n in attn2)
    d_in = keys.shape[1]
    for name in edit.names:
        w = edit.before[name].double()
        # rows of || A W'^T - B ||^2: edited keys -> W c*, preserved keys -> W c, sqrt(lam) I -> W^T
        a = torch.cat([keys, preserve_scale**0.5 * kept, lam**0.5 * torch.eye(d_in, dtype=torch.float64)])
        b = torch.cat([goals @ w.T, preserve_scale**0.5 * kept @ w.T, lam**0.5 * w.T])
        want = torch.linalg.lstsq(a, b).solution.T
        got = edit.after[name].double()
        err = ((got - want).norm() / (want - w).norm()).item()  # relative to the change
        assert err < 1e-4, (name, err)
    assert edit.meta["stats"]["key_rows"] == 4 and edit.meta["stats"]["preserve_rows"] == 4


def test_uce_every_family_and_an_empty_target(load_tiny, family, tmp_path):
    pipe = load_tiny(family)
    edit = uce(pipe, {"van gogh": ""}, preserve=["monet"])
    n_attn2 = sum(1 for n, _ in pipe.unet.named_modules() if n.endswith(".attn2"))
    assert len(edit.names) == 2 * n_attn2
    check_record(edit, load_tiny(family), tmp_path)


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
@pytest.mark.parametrize("fam, method", [("sd1", "esd-x"), ("sdxl", "uce")])
def test_unet_lora_loaded_by_diffusers_matches_edited_unet(load_tiny, tmp_path, fam, method, fmt):
    pipe = load_tiny(fam)
    if method == "esd-x":
        edit = esd(pipe, "van gogh", "x", settings=ESDSettings(sample_steps=2), steps=2, lr=1e-2, progress=False)
    else:
        edit = uce(pipe, [("van gogh", "painting")], preserve=["monet"])
    report = edit.to_lora(tmp_path / "lora.safetensors", format=fmt)
    assert max(report["rel_errors"].values()) < 1e-6
    edit.apply(pipe)
    lora_pipe = load_tiny(fam)
    lora_pipe.load_lora_weights(str(tmp_path), weight_name="lora.safetensors")
    side = pipe.unet.config.sample_size
    cond, _ = encode(pipe, ["a photo of van gogh", "a cat"], side)
    x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 300])
    with torch.no_grad():
        want, got, base = (
            predict(pipe.unet, x, t, cond),
            predict(lora_pipe.unet, x, t, cond),
            predict(load_tiny(fam).unet, x, t, cond),
        )
    scale = want.abs().max()
    print(
        f"{fam} {method} {fmt}: LoRA vs edited {((want - got).abs().max() / scale):.1e}, "
        f"edit's own change {((want - base).abs().max() / scale):.1e}"
    )
    assert ((want - base).abs().max() / scale) > 1e-3  # the edit changes the prediction
    assert ((want - got).abs().max() / scale) < 1e-5


def test_lora_refuses_edits_beyond_linear_weights(load_tiny, tmp_path):
    edit = esd(
        load_tiny("sd1"), "van gogh", "u", settings=ESDSettings(sample_steps=2), steps=1, lr=1e-3, progress=False
    )
    with pytest.raises(ValueError, match="linear weights only"):
        edit.to_lora(tmp_path / "l.safetensors")
    assert not (tmp_path / "l.safetensors").exists()


BAD_METHOD_ARGS = {
    "unknown method": (["--method", "esd", "--remove", "a"], "unknown --method 'esd'"),
    "zero steps": (["--method", "esd-x", "--remove", "a", "--steps", "0"], "--steps must be a positive integer"),
    "text steps": (
        ["--method", "ablate", "--remove", "a", "--to", "b", "--steps", "ten"],
        "--steps must be an integer",
    ),
    "bad lr": (["--method", "esd-u", "--remove", "a", "--lr", "-1"], "--lr must be a number > 0"),
    "steps for quickfix": (
        ["--remove", "a", "--to", "b", "--steps", "5"],
        "--steps does not apply to --method quickfix",
    ),
    "corpus for uce": (
        ["--method", "uce", "--remove", "a", "--to", "b", "--corpus-weight", "1"],
        "--corpus-weight does not apply",
    ),
    "esd with a target": (["--method", "esd-x", "--remove", "a", "--to", "b"], "without --to"),
    "two anchors": (["--method", "ablate", "--pair", "a=b", "--pair", "c=d"], "one concept onto one anchor"),
    "lora of esd-u": (["--method", "esd-u", "--remove", "a", "--lora", "OUT/l.safetensors"], "a LoRA cannot carry"),
}


@pytest.mark.parametrize("case", sorted(BAD_METHOD_ARGS))
def test_bad_method_flags_exit_2_in_one_line(case, tiny_dirs, tmp_path, capsys):
    args, message = BAD_METHOD_ARGS[case]
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    rc = main(["edit", str(tiny_dirs["sd1"]), *args, "--out", str(tmp_path / "e.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_cli_uce_edit_file_lora_and_apply(tiny_dirs, tmp_path, capsys):
    model = str(tiny_dirs["sd1"])
    rc = main(
        [
            "edit",
            model,
            "--method",
            "uce",
            "--remove",
            "van gogh",
            "--to",
            "painting",
            "--preserve",
            "monet",
            "--out",
            str(tmp_path / "e.safetensors"),
            "--lora",
            str(tmp_path / "l.safetensors"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "uce: 'van gogh' -> 'painting'" in out and "wrote LoRA" in out
    edit = Edit.load(tmp_path / "e.safetensors")
    assert edit.meta["method"] == "uce" and all(n.startswith("unet.") for n in edit.names)
    assert main(["apply", model, str(tmp_path / "e.safetensors"), "--save-pipeline", str(tmp_path / "pipe")]) == 0
    from locedit import load_pipeline

    saved = load_pipeline(tmp_path / "pipe")
    assert all(torch.equal(get_parameter(saved, n).detach(), edit.after[n]) for n in edit.names)
