"""Smoke test of the training recipe: every stage runs a few steps, checkpoints, resumes, assembles."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from locedit.builtin import train as T


def _tiny_config() -> T.TrainConfig:
    c = T.TrainConfig(checkpoint_every=2)
    c.vae.steps, c.vae.batch, c.vae.eval_n = 2, 4, 8
    c.clip.steps, c.clip.eval_n = 1, 4
    c.classifier.steps, c.classifier.batch, c.classifier.eval_n = 2, 8, 8
    c.unet.steps, c.unet.batch, c.unet.pool_size = 2, 4, 16
    return c


class Crash(Exception):
    pass


def _killed_then_resumed(monkeypatch, out, stage: str, config: T.TrainConfig, at_step: int) -> None:
    """Run `stage` into `out`, killed right after its checkpoint of step `at_step` is written; then resume it."""
    real_save = T.Checkpoint.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        if step == at_step:
            raise Crash

    monkeypatch.setattr(T.Checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        T.run(out, [stage], config, quiet=True)
    assert json.loads((out / f"{stage}.ckpt.json").read_text())["step"] == at_step
    assert not (out / f"{stage}.done.json").exists()
    monkeypatch.setattr(T.Checkpoint, "save", real_save)
    T.run(out, [stage], config, quiet=True)


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_vae_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    c = _tiny_config()
    c.vae.steps, c.checkpoint_every = 3, 1
    T.run(tmp_path / "straight", ["vae"], c, quiet=True)
    _killed_then_resumed(monkeypatch, tmp_path / "resumed", "vae", c, at_step=2)
    a = load_file(str(tmp_path / "straight" / "vae.ckpt.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "vae.ckpt.safetensors"))
    _assert_bitwise_equal(a, b)
    assert not list((tmp_path / "resumed").glob("*.tmp")) and not list((tmp_path / "resumed").glob(".*"))


def test_unet_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    """A killed and resumed UNet run ships the same (EMA) weights as an uninterrupted one, bit for bit; the
    resumed run reads the latent pool from its cache file, the uninterrupted one encodes it. The EMA (diffusers
    EMAModel) is checkpointed as shadow-weight tensors plus its step in the JSON, and follows the recipe's
    schedule: the first update copies the weights, update k uses decay min(0.999, k / (9 + k))."""
    c = _tiny_config()
    c.unet.steps, c.checkpoint_every = 4, 1
    T.run(tmp_path / "base", ["vae", "clip"], c, quiet=True)
    for name in ("straight", "resumed"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    snapshots = {}
    real_save = T.Checkpoint.save

    def save_and_keep(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        snapshots[step] = load_file(str(self.tensors_path))

    with monkeypatch.context() as m:
        m.setattr(T.Checkpoint, "save", save_and_keep)
        T.run(tmp_path / "straight", ["unet"], c, quiet=True)
    _killed_then_resumed(monkeypatch, tmp_path / "resumed", "unet", c, at_step=2)
    for run in ("straight", "resumed"):
        assert json.loads((tmp_path / run / "unet.ckpt.json").read_text())["ema"]["optimization_step"] == 4
    a = load_file(str(tmp_path / "straight" / "unet.ckpt.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "unet.ckpt.safetensors"))
    _assert_bitwise_equal(a, b)
    weights = "unet/diffusion_pytorch_model.safetensors"
    shipped = [load_file(str(tmp_path / run / weights)) for run in ("straight", "resumed")]
    _assert_bitwise_equal(*shipped)
    # the EMA's schedule; shadow weights are stored in parameter order
    names = [n for n, _ in T.build_unet(c.unet, c.clip.width).named_parameters()]
    assert len(names) == len([k for k in a if k.startswith("ema/")])
    for k in range(1, 5):
        decay = 0.0 if k == 1 else min(c.unet.ema_decay, k / (9 + k))
        for i, name in enumerate(names):
            weight, ema = snapshots[k][f"unet/{name}"], snapshots[k][f"ema/{i}"]
            want = weight if k == 1 else decay * snapshots[k - 1][f"ema/{i}"] + (1 - decay) * weight
            torch.testing.assert_close(ema, want, msg=f"step {k}: {name}")
    # what ships is the EMA, not the last raw weights
    for i, name in enumerate(names):
        torch.testing.assert_close(shipped[0][name], a[f"ema/{i}"], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a[f"ema/{i}"], a[f"unet/{name}"]) for i, name in enumerate(names))


def test_all_stages_smoke(tmp_path):
    c = _tiny_config()
    metrics = T.run(tmp_path, list(T.STAGES), c, quiet=True)
    for stage in ("vae", "clip", "classifier", "unet"):
        assert (tmp_path / f"{stage}.ckpt.safetensors").exists()
        assert (tmp_path / f"{stage}.done.json").exists()
    assert 0 <= metrics["vae"]["recon_mse_01"] < 1
    assert "skipped" in metrics["vision"] and not (tmp_path / "vision.ckpt.json").exists()  # cnn tower: no stage
    assert (tmp_path / "classifier.safetensors").exists()
    folder = tmp_path / "pipeline"
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle", num_inference_steps=2, output_type="pt").images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    # the assembled folder carries the edit corpus; it is the one shipped with the built-in model
    from locedit.builtin import builtin_path

    assert (folder / "locedit_corpus.txt").read_text() == (builtin_path("shapes") / "locedit_corpus.txt").read_text()
    assert (folder / "locedit_probes.jsonl").read_text() == (
        builtin_path("shapes") / "locedit_probes.jsonl"
    ).read_text()
    # a second run skips finished stages and resumes from their checkpoints
    again = T.run(tmp_path, ["vae", "unet"], c, quiet=True)
    assert again["vae"] == json.loads((tmp_path / "vae.done.json").read_text())
