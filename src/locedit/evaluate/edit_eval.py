"""Edit evaluation: each group of a suite judged image by image (the same seed before and after the
edit), rates with Wilson 95% intervals, and a null control.

The null control is a random ΔW of the edit's Frobenius norm on the same tensors, evaluated on the
same suite: it shows what "no specific damage" looks like on this model, beside every rate.

Rates (per group, over the *applicable* items: those whose before image shows what the group tests):
- efficacy / generality: ``removed``, the share whose after image no longer shows the key; with a
  target also ``to_target``; with expected other attributes ``others_kept``.
- neighbours / attributes / entities / other_route: ``kept``, the share still showing what they asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from locedit.errors import InvalidInputError
from locedit.evaluate.generate import generate
from locedit.evaluate.judges import Judge, Outcome
from locedit.evaluate.suite import EFFICACY_GROUPS, GROUPS, SPECIFICITY_GROUPS, EvalItem, check_items
from locedit.options import is_int, is_number, option, require


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (default 95%) of a proportion k/n; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)  # exact at the ends (rounding leaves 1 - 1e-16)


@dataclass
class Rate:
    """k of n applicable items succeeded; rate = k/n with its Wilson 95% interval [lo, hi]."""

    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_json(self) -> dict:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "rate": None if not self.n else self.rate, "lo": lo, "hi": hi}


def metric_name(group: str) -> str:
    return "removed" if group in EFFICACY_GROUPS else "kept"


def rates_of(items: Sequence[EvalItem], outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Rate]:
    """{(group, metric): Rate} over the applicable items of each group present in `items`."""
    out: dict[tuple[str, str], Rate] = {}
    for group in GROUPS:
        pairs = [(it, o) for it, o in zip(items, outcomes) if it.group == group and o.applicable]
        if not any(it.group == group for it in items):
            continue
        out[(group, metric_name(group))] = Rate(sum(o.success for _, o in pairs), len(pairs))
        if group in EFFICACY_GROUPS:
            targets = [o.to_target for _, o in pairs if o.to_target is not None]
            if targets:
                out[(group, "to_target")] = Rate(sum(targets), len(targets))
            kept = [o.others_kept for _, o in pairs if o.others_kept is not None]
            if kept:
                out[(group, "others_kept")] = Rate(sum(kept), len(kept))
    return out


def random_delta_like(edit, seed: int = 0) -> dict[str, torch.Tensor]:
    """{name: W + R}: a Gaussian R with ||R||_F = ||ΔW||_F for every tensor of `edit` (the null control)."""
    gen = torch.Generator().manual_seed(seed)
    after = {}
    for name in edit.names:
        delta = edit.delta(name)
        noise = torch.randn(delta.shape, generator=gen, dtype=torch.float64)
        noise *= delta.norm() / noise.norm().clamp_min(1e-30)
        after[name] = (edit.before[name].double() + noise).to(edit.before[name].dtype)
    return after


def null_edit(edit, seed: int = 0):
    """An Edit with the same tensors and norms as `edit` but random directions (see random_delta_like)."""
    from locedit.edit.edit import Edit

    meta = {**edit.meta, "method": "null-control", "null_seed": seed}
    return Edit(dict(edit.before), random_delta_like(edit, seed), meta)


@torch.no_grad()
def weight_change(edit, pipe=None, prompts: Sequence[str] = ()) -> dict:
    """How much the edit changes: per tensor ||ΔW||/||W|| and numerical rank (singular values above
    s_max·1e-6; biases count as one row, convolution kernels as (out, in·k·k) matrices), and, with
    `pipe` and `prompts`, the largest and mean relative change ||E'(p) − E(p)|| / ||E(p)|| of the text
    encoders' last hidden states over the prompts."""
    out: dict = {"tensors": {}}
    for name in edit.names:
        delta, base = edit.delta(name), edit.before[name].double()
        # rank of the change as a matrix (out, everything else): a bias is one row, a conv kernel (out, in·k·k)
        s = torch.linalg.svdvals(delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1))
        rank = int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0
        out["tensors"][name] = {"rel_norm": float(delta.norm() / base.norm()), "rank": rank, "shape": list(delta.shape)}
    if pipe is not None and prompts:
        from locedit.models import text_encoders

        def encode() -> list[torch.Tensor]:
            return [
                h.encoder(h.tokenize(list(prompts)).to(h.encoder.device))[0].double().cpu() for h in text_encoders(pipe)
            ]

        before = encode()
        edit.apply(pipe)
        try:
            after = encode()
        finally:
            edit.revert(pipe)
        rel = torch.stack(
            [(a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1) for a, b in zip(after, before)]
        ).amax(0)
        out["output_change_max"] = float(rel.max())
        out["output_change_mean"] = float(rel.mean())
        out["output_change_prompts"] = len(prompts)
    return out


@dataclass
class EvalSettings:
    """How images are generated for an evaluation (CLI: `locedit eval` flags)."""

    # Denoising steps per image (the built-in model's quality numbers use 20).
    steps: int = option(20, parse=int, help="denoising steps")
    # Classifier-free guidance scale (the built-in model is trained for 5).
    guidance: float = option(5.0, parse=float, help="classifier-free guidance scale")
    # Images per pipeline call: memory grows with it.
    batch: int = option(64, parse=int, help="images per pipeline call")
    # Evaluate a random ΔW of the edit's norm on the same suite (doubles nothing else; adds one pass).
    null: bool = option(
        True, flag="--no-null", action="flag", help="skip the null control (a random ΔW of the edit's norm)"
    )
    # Seed of the null control's random directions.
    null_seed: int = 0

    def __post_init__(self):
        require(self, "steps", is_int(self.steps, 1), "a positive integer")
        require(self, "guidance", is_number(self.guidance), "a number")
        require(self, "batch", is_int(self.batch, 1), "a positive integer")
        require(self, "null_seed", is_int(self.null_seed, 0), "a non-negative integer")


@dataclass
class EvalReport:
    """Everything one evaluation measured."""

    items: list[EvalItem]
    observations: dict[str, list[dict]]  # "before" / "after" / "null" -> one observation per item
    outcomes: dict[str, list[Outcome]]  # "after" / "null" -> one outcome per item
    rates: dict[str, dict[tuple[str, str], Rate]]  # "after" / "null" -> {(group, metric): Rate}
    weight: dict
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # "before" / "after" / "null" -> (B, 3, H, W)

    def specificity(self, which: str = "after") -> float:
        """The lowest kept-rate over the specificity groups present (nan when none)."""
        vals = [r.rate for (g, _), r in self.rates[which].items() if g in SPECIFICITY_GROUPS and r.n]
        return min(vals) if vals else float("nan")

    def to_json(self) -> dict:
        """The report without its images, as JSON (rates are recomputed from the outcomes by from_json)."""
        return {
            "items": [it.to_json() for it in self.items],
            "observations": self.observations,
            "outcomes": {w: [vars(o) for o in outs] for w, outs in self.outcomes.items()},
            "weight": self.weight,
        }

    @classmethod
    def from_json(cls, obj: dict) -> EvalReport:
        """A report written by to_json (no images)."""
        items = [EvalItem(**it) for it in obj["items"]]
        outcomes = {w: [Outcome(**o) for o in outs] for w, outs in obj["outcomes"].items()}
        rates = {w: rates_of(items, outs) for w, outs in outcomes.items()}
        return cls(items, obj["observations"], outcomes, rates, obj["weight"])

    def rows(self) -> list[dict]:
        """One row per (group, metric): the edit's rate and interval, and the null control's."""
        rows = []
        for (group, metric), rate in self.rates["after"].items():
            row = {"group": group, "metric": metric, **rate.to_json()}
            null = self.rates.get("null", {}).get((group, metric))
            if null is not None:
                row.update({f"null_{k}": v for k, v in null.to_json().items()})
            rows.append(row)
        return rows


def evaluate_edit(
    pipe,
    edit,
    items: Sequence[EvalItem],
    judge: Judge,
    settings: EvalSettings | None = None,
    progress: Callable[[int], None] | None = None,
    keep_images: bool = True,
    baseline: EvalReport | None = None,
) -> EvalReport:
    """Judge `edit` on `items`: generate before, with the edit, and (settings.null) with the null
    control, all with the items' seeds; the pipeline is left as it was.

    `progress`, if given, is called with the number of images each pipeline call adds (tqdm's
    `update` convention: increments), 2 or 3 × len(items) in all. `baseline`: an earlier report on the same
    items and settings whose before images are reused (comparing many edits of one model).
    """
    cfg = settings or EvalSettings()
    items = list(items)
    check_items(items)
    judge.check(items)
    prompts, seeds = [it.prompt for it in items], [it.seed for it in items]

    def run() -> tuple[list[dict], torch.Tensor]:
        images = generate(pipe, prompts, seeds, cfg.steps, cfg.guidance, cfg.batch, progress)
        return judge.observe(images, items), images

    observations, images = {}, {}
    if baseline is not None:
        if [(it.prompt, it.seed) for it in baseline.items] != list(zip(prompts, seeds)):
            raise InvalidInputError("the baseline report was made on other items; evaluate without it")
        observations["before"], images["before"] = baseline.observations["before"], baseline.images.get("before")
    else:
        observations["before"], images["before"] = run()
    runs = {"after": edit}
    if cfg.null:
        runs["null"] = null_edit(edit, cfg.null_seed)
    for which, applied in runs.items():
        applied.apply(pipe)
        try:
            observations[which], images[which] = run()
        finally:
            applied.revert(pipe)
    outcomes = {
        w: [judge.outcome(it, b, a) for it, b, a in zip(items, observations["before"], observations[w])] for w in runs
    }
    rates = {w: rates_of(items, outcomes[w]) for w in runs}
    spec_prompts = [it.prompt for it in items if it.group in SPECIFICITY_GROUPS]
    weight = weight_change(edit, pipe, spec_prompts)
    return EvalReport(items, observations, outcomes, rates, weight, images if keep_images else {})
