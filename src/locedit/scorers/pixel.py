"""The model-free `pixel` scorer: closeness to the clean image."""

from __future__ import annotations

import torch

from locedit.probes import Probe
from locedit.scorers.base import Scorer, no_argument, register_scorer


class PixelScorer(Scorer):
    """Model-free: 1 − mean absolute pixel difference to the clean image (in [0, 1]; clean = 1).

    For models without any attribute scorer: the normalized effect then measures how much of the
    corruption's visible change a restoration undoes.
    """

    name = "pixel"
    min_drop = 0.01  # one percent of the pixel range, on average over all pixels

    def score(self, images: torch.Tensor, probe: Probe, reference: torch.Tensor) -> torch.Tensor:
        x = images.detach().to(torch.float64)
        ref = reference.detach().to(torch.float64)
        return 1.0 - (x - ref[None]).abs().flatten(1).mean(1)


register_scorer("pixel", lambda arg, device: PixelScorer(), check=no_argument("pixel"))
