"""Smoke test of the training recipe: every stage runs a few steps, checkpoints, resumes, assembles."""

from __future__ import annotations

import json

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


def test_vae_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    c = _tiny_config()
    c.vae.steps, c.checkpoint_every = 3, 1
    T.run(tmp_path / "straight", ["vae"], c, quiet=True)

    class Crash(Exception):
        pass

    real_save = T.Checkpoint.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        if step == 2:
            raise Crash

    monkeypatch.setattr(T.Checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        T.run(tmp_path / "resumed", ["vae"], c, quiet=True)
    assert json.loads((tmp_path / "resumed" / "vae.ckpt.json").read_text())["step"] == 2
    assert not (tmp_path / "resumed" / "vae.done.json").exists()
    monkeypatch.setattr(T.Checkpoint, "save", real_save)
    T.run(tmp_path / "resumed", ["vae"], c, quiet=True)
    a = load_file(str(tmp_path / "straight" / "vae.ckpt.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "vae.ckpt.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not list((tmp_path / "resumed").glob("*.tmp")) and not list((tmp_path / "resumed").glob(".*"))


def test_all_stages_smoke(tmp_path):
    c = _tiny_config()
    metrics = T.run(tmp_path, list(T.STAGES), c, quiet=True)
    for stage in ("vae", "clip", "classifier", "unet"):
        assert (tmp_path / f"{stage}.ckpt.safetensors").exists()
        assert (tmp_path / f"{stage}.done.json").exists()
    assert 0 <= metrics["vae"]["recon_mse_01"] < 1
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
    # a second run skips finished stages and resumes from their checkpoints
    again = T.run(tmp_path, ["vae", "unet"], c, quiet=True)
    assert again["vae"] == json.loads((tmp_path / "vae.done.json").read_text())
