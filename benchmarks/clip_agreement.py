"""How well the paper's CLIP-Score agrees with the classifier on a built-in model that ships a CLIP folder.

For each attribute of the world, on fresh seeds:
  renders     CLIP's zero-shot choice among captions that vary only that attribute, on rendered world
              images (ground truth known): CLIP's accuracy;
  generated   the same choice on the model's generations of held-out phrasings: agreement of CLIP's
              choice with the classifier's label, and each one's accuracy against the asked value;
  graded      Spearman correlation, over generations, of CLIP-Score(image, asked caption) with the
              classifier's probability of the asked value.
Each rate with its n and a Wilson 95% interval.

Usage: ``python benchmarks/clip_agreement.py [--world scenes] [--model FOLDER] [--n 100] [--seed 3000]``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from locedit.builtin import builtin_path
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.world import get_world
from locedit.evaluate.edit_eval import wilson
from locedit.io import write_json
from locedit.scorers.clip import ClipScorer


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _choice(clip: ClipScorer, images: torch.Tensor, caption_sets: list[list[str]]) -> list[int]:
    """Index of the best-scoring caption of each image's own caption set."""
    return [int(clip.score_texts(images[i : i + 1], caps)[0].argmax()) for i, caps in enumerate(caption_sets)]


def run(pipe, clip: ClipScorer, classifier: ShapesClassifier, n: int, seed: int, steps: int, guidance: float) -> dict:
    w = classifier.world
    rng = np.random.default_rng(seed)
    records = [w.sample(rng) for _ in range(n)]
    templates = [w.held_out_templates[int(rng.integers(len(w.held_out_templates)))] for _ in range(n)]
    prompts = [w.caption(r, t) for r, t in zip(records, templates)]
    renders = torch.from_numpy(w.render_batch(records))
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="pt")
    generated = out.images.float().cpu()
    labels = classifier.predict(generated)
    proba = classifier.predict_proba(generated)
    results: dict = {}
    for attr, values in classifier.values.items():
        sets = [[w.caption(replace(r, **{attr: v}), t) for v in values] for r, t in zip(records, templates)]
        truth = [values.index(r.attributes[attr]) for r in records]
        on_renders = _choice(clip, renders, sets)
        on_generated = _choice(clip, generated, sets)
        clf = [values.index(lab[attr]) for lab in labels]
        asked_scores = np.array([float(clip.score_texts(generated[i : i + 1], [prompts[i]])[0, 0]) for i in range(n)])
        asked_proba = np.array([float(proba[attr][i, truth[i]]) for i in range(n)])

        def rate(hits: list[bool]) -> dict:
            k = int(sum(hits))
            lo, hi = wilson(k, len(hits))
            return {"rate": k / len(hits), "lo": lo, "hi": hi, "n": len(hits)}

        results[attr] = {
            "clip_on_renders": rate([a == b for a, b in zip(on_renders, truth)]),
            "clip_vs_classifier": rate([a == b for a, b in zip(on_generated, clf)]),
            "clip_on_generated": rate([a == b for a, b in zip(on_generated, truth)]),
            "classifier_on_generated": rate([a == b for a, b in zip(clf, truth)]),
            "spearman_score_vs_proba": _spearman(asked_scores, asked_proba),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="scenes", help="built-in world whose model ships a CLIP folder")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped built-in model)")
    parser.add_argument("--n", type=int, default=100, help="images per attribute set")
    parser.add_argument("--seed", type=int, default=3000, help="seed of records and generations (fresh)")
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    parser.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    w = get_world(args.world)
    folder = args.model or str(builtin_path(args.world))
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    classifier = ShapesClassifier.load(f"{folder}/classifier.safetensors", w)
    results = run(pipe, ClipScorer(f"{folder}/clip"), classifier, args.n, args.seed, args.steps, args.guidance)
    cols = ("clip_on_renders", "clip_vs_classifier", "clip_on_generated", "classifier_on_generated")
    print(f"{'attribute':<10}" + "".join(f"{c:>26}" for c in cols) + f"{'spearman':>10}")
    for attr, row in results.items():
        cells = "".join(f"{row[c]['rate']:>10.3f} [{row[c]['lo']:.2f},{row[c]['hi']:.2f}]" for c in cols)
        print(f"{attr:<10}{cells}{row['spearman_score_vs_proba']:>10.3f}")
    print(f"n = {args.n} per attribute (held-out phrasings, seed {args.seed})")
    if args.json:
        write_json(args.json, results)  # atomic


if __name__ == "__main__":
    main()
