"""Generation quality of a built-in model (``builtin:shapes`` or ``builtin:scenes``), judged by its world's classifier.

On fresh seeds, generates captions of these splits and prints per-attribute accuracy with the quality bar:
  seen            training templates × seen combinations                      (target ≥ 0.95);
  paraphrase      held-out templates × seen combinations (generality)          (target ≥ 0.90);
  composition     training templates × held-out colour–shape pairs             (target ≥ 0.95);
  entity          named entities ("the flag of veloria", ...) -> their bound attributes (target ≥ 0.90);
  entity/held-out held-out entity phrasings, in worlds that have them          (target ≥ 0.90).
Also the subset of seen/paraphrase prompts that name the style through an artist.

Usage: ``python benchmarks/builtin_quality.py [--world shapes|scenes] [--n 200] [--seed 1000] [--model FOLDER]
[--json OUT]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from locedit.builtin import builtin_path
from locedit.builtin.classifier import ShapesClassifier
from locedit.builtin.world import Record, World, get_world
from locedit.io import write_json

#: quality bar per split (issue 10): every attribute at least this accurate
TARGETS = {"seen": 0.95, "paraphrase": 0.90, "composition": 0.95, "entity": 0.90, "entity/held-out": 0.90}


def split_prompts(w: World, split: str, n: int, rng: np.random.Generator) -> list[tuple[str, Record, bool]]:
    """(caption, expected record, names-an-artist) for ``n`` prompts of ``split``."""
    out = []
    if split.startswith("entity"):
        names = sorted(w.entities)
        templates = w.held_out_entity_templates if split == "entity/held-out" else w.entity_templates
        for i in range(n):
            name = names[i % len(names)]
            rec = replace(w.entities[name], entity=name)
            template = templates[int(rng.integers(len(templates)))]
            out.append((w.caption(rec, template), rec, False))
        return out
    templates = w.held_out_templates if split == "paraphrase" else w.train_templates
    for _ in range(n):
        rec = w.sample(rng, held_out=split == "composition")
        template = templates[int(rng.integers(len(templates)))]
        out.append((w.caption(rec, template), rec, "{artist}" in template))
    return out


def generate(pipe, prompts: list[str], seed: int, steps: int, guidance: float, batch: int = 32) -> torch.Tensor:
    """Images (B,3,S,S) in [0,1], one generator per prompt (seed + index)."""
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        res = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="pt")
        images.append(res.images.float().cpu())
    return torch.cat(images)


def evaluate(
    pipe,
    classifier: ShapesClassifier,
    n: int,
    seed: int,
    steps: int = 20,
    guidance: float = 5.0,
    splits: tuple[str, ...] | None = None,
) -> dict:
    """{split: {attribute: accuracy, ..., "n"}} plus artist-subset rows and seconds per image."""
    w = classifier.world
    if splits is None:
        splits = ("seen", "paraphrase", "composition", "entity") + (
            ("entity/held-out",) if w.held_out_entity_templates else ()
        )
    results: dict[str, dict[str, float]] = {}
    total_images, t0 = 0, time.time()
    for k, split in enumerate(splits):
        rng = np.random.default_rng([seed, k])
        items = split_prompts(w, split, n if not split.startswith("entity") else max(8, n // 5), rng)
        images = generate(
            pipe, [c for c, _, _ in items], seed=seed * 100_000 + k * 10_000, steps=steps, guidance=guidance
        )
        total_images += len(items)
        preds = classifier.predict(images)
        rows = {split: list(range(len(items)))}
        if split in ("seen", "paraphrase"):
            rows[f"{split}/artist"] = [i for i, it in enumerate(items) if it[2]]
        for name, idx in rows.items():
            if not idx:
                continue
            acc = {a: float(np.mean([preds[i][a] == items[i][1].attributes[a] for i in idx])) for a in w.attributes}
            acc["n"] = len(idx)
            results[name] = acc
    results["seconds_per_image"] = {"value": (time.time() - t0) / max(1, total_images)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="prompts per split (entities: n/5)")
    parser.add_argument(
        "--seed", type=int, default=1000, help="seed of prompts and noise (fresh: not used in training)"
    )
    parser.add_argument("--world", default="shapes", choices=("shapes", "scenes"), help="which built-in model")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped builtin model)")
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
    if w.name == "shapes":
        classifier = ShapesClassifier.load()
    else:  # other worlds ship their classifier inside the model folder
        classifier = ShapesClassifier.load(f"{folder}/classifier.safetensors", w)
    results = evaluate(pipe, classifier, args.n, args.seed, args.steps, args.guidance)
    print(f"{'split':<20}" + "".join(f"{a:>9}" for a in w.attributes) + f"{'n':>6}  target")
    for name, acc in results.items():
        if name == "seconds_per_image":
            continue
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f"  {'meets' if min(acc[a] for a in w.attributes) >= target else 'MISSES'} ≥ {target}"
        )
        print(f"{name:<20}" + "".join(f"{acc[a]:>9.3f}" for a in w.attributes) + f"{acc['n']:>6}{verdict}")
    print(f"generation: {results['seconds_per_image']['value']:.3f} s/image (incl. classification)")
    if args.json:
        write_json(args.json, results)  # atomic


if __name__ == "__main__":
    main()
