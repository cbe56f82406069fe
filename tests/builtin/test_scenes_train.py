"""The scenes recipe (builtin:scenes) at toy sizes: every stage checkpoints and resumes bitwise, and the
assembled folder loads as a diffusers pipeline with a CLIP-BPE tokenizer, its classifier and a CLIPModel."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from locedit.builtin import train as T
from locedit.builtin.world import SCENES_WORLD


def _toy_scenes() -> T.TrainConfig:
    c = T.scenes_config()
    c.checkpoint_every = 1
    c.vae.steps, c.vae.batch, c.vae.eval_n = 2, 4, 8
    c.vision.steps, c.vision.batch, c.vision.eval_n = 2, 8, 4
    c.clip.steps, c.clip.batch, c.clip.eval_n, c.clip.width, c.clip.layers, c.clip.vision_layers = 2, 8, 2, 32, 2, 1
    c.classifier.steps, c.classifier.batch, c.classifier.eval_n = 2, 8, 8
    c.unet.steps, c.unet.batch, c.unet.pool_size = 2, 4, 16
    return c


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted toy run of every stage, and its checkpoints."""
    out = tmp_path_factory.mktemp("scenes_straight")
    metrics = T.run(out, list(T.STAGES), _toy_scenes(), quiet=True)
    return out, metrics


@pytest.mark.parametrize("stage", ["vae", "vision", "clip", "classifier", "unet"])
def test_stage_killed_and_resumed_equals_uninterrupted(stage, straight, tmp_path, monkeypatch):
    ref, _ = straight
    c = _toy_scenes()
    before = T.STAGES[: T.STAGES.index(stage)]
    if before:
        T.run(tmp_path, list(before), c, quiet=True)
    real_save = T.Checkpoint.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        if step == 1:
            raise Crash

    monkeypatch.setattr(T.Checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        T.run(tmp_path, [stage], c, quiet=True)
    monkeypatch.setattr(T.Checkpoint, "save", real_save)
    T.run(tmp_path, [stage], c, quiet=True)
    a = load_file(str(ref / f"{stage}.ckpt.safetensors"))
    b = load_file(str(tmp_path / f"{stage}.ckpt.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_assembled_folder(straight):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTextModel

    from locedit.builtin.classifier import ShapesClassifier
    from locedit.probes import MODEL_PROBES_FILE, load_probes, validate_probes
    from locedit.scorers import make_scorer

    out, metrics = straight
    folder = out / "pipeline"
    c = _toy_scenes()
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 77 and len(pipe.tokenizer) == 512 + c.clip.bpe_merges + 2
    # the folder's default probes fit its CLIP-BPE tokenizer
    validate_probes(load_probes(folder / MODEL_PROBES_FILE), [pipe.tokenizer])
    assert pipe.text_encoder.config.num_hidden_layers == c.clip.layers
    assert pipe.unet.config.sample_size == 12 and pipe.vae.config.sample_size == 48
    img = pipe("a large orange heart on the left on a wavy background", num_inference_steps=2, output_type="pt").images
    assert img.shape == (1, 3, 48, 48) and torch.isfinite(img).all()
    # the UNet and VAE are stored in float16 (storage_dtype) and load as float32, equal to the trained weights
    # rounded to float16
    for name in ("unet", "vae"):
        stored = load_file(str(folder / name / "diffusion_pytorch_model.safetensors"))
        assert {t.dtype for t in stored.values()} == {torch.float16}, name
        trained = load_file(str(out / name / "diffusion_pytorch_model.safetensors"))
        loaded = getattr(pipe, name).state_dict()
        for key, value in trained.items():
            assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value.half().float()), key
    assert make_scorer(f"builtin:{folder}").worlds.forced is SCENES_WORLD  # the folder's own classifier
    # the CLIP folder's text tower is the pipeline's text encoder, stored in float16
    clip = CLIPModel.from_pretrained(str(folder / "clip"), local_files_only=True)
    text = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    clip_text = T._text_transformer(clip.text_model).state_dict()
    for key, value in T._text_transformer(text).state_dict().items():
        assert torch.equal(value.half(), clip_text[key].half()), key  # transformers 4 loads it as float32
    stored = load_file(str(folder / "clip" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    scorer = make_scorer(f"clip:{folder / 'clip'}")
    assert scorer.model.dtype == torch.float32
    assert scorer.score_texts(img, ["a red star", "a blue ring"]).shape == (1, 2)
    clf = ShapesClassifier.load(folder / "classifier.safetensors", SCENES_WORLD)
    assert set(clf.predict(img)[0]) == {"colour", "shape", "style", "size", "position"}
    assert "retrieval_seen_attr_position" in metrics["clip"]
    assert json.loads((out / "config.json").read_text())["world"] == "scenes"


def test_clip_stage_locks_the_pre_trained_image_tower(straight):
    """LiT: the clip stage trains against the vision stage's image transformer without changing it, and the
    shipped CLIP folder holds exactly that tower (float16)."""
    from transformers import CLIPModel

    out, metrics = straight
    assert set(metrics["vision"]) >= {"accuracy_seen_shape", "accuracy_held_out_position", "train_s"}
    tower = load_file(str(out / "vision.safetensors"))
    trained = load_file(str(out / "clip.ckpt.safetensors"))
    vision_keys = [k for k in trained if k.startswith("clip/vision_model.")]
    assert vision_keys
    for key in vision_keys:
        name = key.removeprefix("clip/vision_model.").removeprefix("vision_model.")
        assert torch.equal(trained[key], tower[name]), key
    # ...while the text tower and the visual projection did train
    clip = CLIPModel.from_pretrained(str(out / "clip"), local_files_only=True)
    for name, value in T._vision_transformer(clip.vision_model).state_dict().items():
        assert torch.equal(value.half(), tower[name].half()), name
    fresh = T.build_clip_model(_toy_scenes().clip, SCENES_WORLD, clip.config.text_config.vocab_size, 0, 1)
    assert not torch.equal(fresh.visual_projection.weight, clip.visual_projection.weight.float())


def test_clip_stage_without_its_vision_stage_names_the_fix(tmp_path):
    with pytest.raises(T.InvalidInputError, match="--stage vision"):
        T.run(tmp_path, ["clip"], _toy_scenes(), quiet=True)
