"""The `clip:PATH` scorer: CLIP-Score of an image against the probe's text, from a local CLIP folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from locedit.probes import Probe
from locedit.scorers.base import Scorer, ScorerError, register_scorer

# OpenAI CLIP's image normalisation, used when the folder has no preprocessor_config.json.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_clip_folder(path: str | Path | None) -> Path:
    """The CLIP folder `path`, expanded; ScorerError when it is missing or has no config.json."""
    if not path:
        raise ScorerError("--scorer clip needs a folder: clip:PATH (a local transformers CLIP folder)")
    folder = Path(path).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ScorerError(
            f"CLIP scorer folder {str(path)!r} not found or has no config.json; give "
            "--scorer clip:PATH with a local transformers CLIP folder (or use --scorer pixel)"
        )
    return folder


class ClipScorer(Scorer):
    """CLIP-Score: 100 × cosine(image embedding, text embedding of the probe's target text).

    Uses a local transformers CLIP folder (CLIPModel weights + tokenizer files); never a hub name.
    Not clamped at 0 (unlike Hessel et al.), so that small differences stay visible.
    """

    min_drop = 1.0  # CLIP-Score points (0.01 cosine)

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        from transformers import CLIPModel, CLIPTokenizer

        folder = check_clip_folder(path)
        self.name = f"clip:{folder}"
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()
        if self.device.type == "cpu":  # float16 folders (e.g. builtin:scenes' CLIP) compute in float32 on CPU
            self.model = self.model.float()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        mean, std = _CLIP_MEAN, _CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _text(self, text: str) -> torch.Tensor:
        if text not in self._text_cache:
            ids = self.tokenizer([text], padding="max_length", truncation=True, return_tensors="pt").to(self.device)
            emb = self.model.get_text_features(**ids)
            emb = getattr(emb, "pooler_output", emb)  # transformers 5 may return an output object
            self._text_cache[text] = torch.nn.functional.normalize(emb.float(), dim=-1)[0]
        return self._text_cache[text]

    @torch.no_grad()
    def score_texts(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CLIP-Scores (N, T) float64 of `images` (N, 3, H, W) in [0, 1] against each of `texts`."""
        x = images.detach().float().cpu()
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        x = ((x.clamp(0, 1) - self.mean) / self.std).to(self.device, self.model.dtype)
        emb = self.model.get_image_features(pixel_values=x)
        emb = getattr(emb, "pooler_output", emb)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        text = torch.stack([self._text(t) for t in texts])  # (T, D)
        return (100.0 * emb @ text.T).double().cpu()

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        return self.score_texts(images, [probe.target_text])[:, 0]


register_scorer("clip", lambda arg, device: ClipScorer(arg, device), check=check_clip_folder, usage="clip:PATH")
