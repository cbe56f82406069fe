"""How well a built-in model's frozen text encoder separates each attribute: linear probes on its hidden states.

The UNet can draw an attribute only if the text states it attends to tell the attribute's values apart.
For captions of seen combinations (training templates, entities excluded), this fits a multinomial
logistic regression per attribute and layer on standardized states and reports its accuracy on held-out
captions (a 75/25 split of the captions, so the probe is judged out of sample; chance = 1 / #values):
  eos      the state at the first EOS token (what CLIP's contrastive loss pools);
  pad      the state at the last padding position (the UNet attends to all 77 positions);
  word     for the shape, the state at the shape word's last token, with the mean distance between
           the shapes' centroids in units of the mean within-shape spread (how far apart, not only
           whether separable).
On builtin:scenes' first run (2026-11-30), EOS state of the last layer: colour, style and position 1.00,
size 0.84, shape 0.70 (n = 300); on builtin:shapes every attribute 1.00; on the second run's encoder (trained
against a locked, supervised image tower) every attribute 1.00.

Usage: ``python benchmarks/text_attribute_probe.py [--world scenes] [--model FOLDER] [--n 1200] [--layers 0,6,12]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from locedit.builtin import builtin_path
from locedit.builtin.world import Record, World, get_world
from locedit.io import write_json


def captions(w: World, n: int, seed: int) -> tuple[list[str], list[Record]]:
    """``n`` (caption, record) pairs of seen combinations under training templates (no entities)."""
    rng = np.random.default_rng(seed)
    texts, records = [], []
    while len(texts) < n:
        rec, text = w.sample_training_pair(rng)
        if rec.entity is None:
            texts.append(text)
            records.append(rec)
    return texts, records


def probe_accuracy(features: torch.Tensor, labels: list[str], n_train: int, steps: int = 300) -> float:
    """Held-out accuracy of a logistic regression fitted on the first ``n_train`` rows (features standardized
    with the training rows' statistics)."""
    values = sorted(set(labels))
    y = torch.tensor([values.index(v) for v in labels])
    mean, std = features[:n_train].mean(0), features[:n_train].std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], len(values))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(x[:n_train]), y[:n_train]).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(x[n_train:]).argmax(-1) == y[n_train:]).float().mean())


def centroid_separation(features: torch.Tensor, labels: list[str]) -> float:
    """Mean distance between the values' centroids / mean norm of the within-value standard deviation."""
    values = sorted(set(labels))
    groups = [features[[i for i, v in enumerate(labels) if v == value]] for value in values]
    centroids = torch.stack([g.mean(0) for g in groups])
    spread = torch.stack([g.std(0).norm() for g in groups]).mean()
    if spread < 1e-6:  # every caption has the same state here (e.g. padding at the embeddings)
        return float("nan")
    k = len(values)
    return float(torch.cdist(centroids, centroids).sum() / (k * (k - 1)) / spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="scenes", choices=("shapes", "scenes"), help="which built-in model")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped builtin model)")
    parser.add_argument("--n", type=int, default=1200, help="captions (75%% fit the probes, 25%% judge them)")
    parser.add_argument("--layers", default=None, help="hidden-state indices (0 = embeddings; default 0, mid, last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    from transformers import CLIPTextModel, CLIPTokenizer

    w = get_world(args.world)
    folder = args.model or str(builtin_path(args.world))
    tok = CLIPTokenizer.from_pretrained(f"{folder}/tokenizer", local_files_only=True)
    text = CLIPTextModel.from_pretrained(f"{folder}/text_encoder", local_files_only=True).eval()
    texts, records = captions(w, args.n, args.seed)
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = text(input_ids=ids.input_ids, output_hidden_states=True).hidden_states
    depth = len(hidden) - 1
    layers = [int(x) for x in args.layers.split(",")] if args.layers else [0, depth // 2, depth]
    eos = (ids.input_ids == tok.eos_token_id).int().argmax(-1)  # first EOS
    rows = torch.arange(len(texts))
    word = []
    for t, rec in zip(texts, records):
        seq = tok(t).input_ids
        sub = tok(rec.shape, add_special_tokens=False).input_ids
        word.append(max(i for i in range(len(seq)) if seq[i : i + len(sub)] == sub) + len(sub) - 1)
    word_pos = torch.tensor(word)
    n_train = int(0.75 * len(texts))
    results: dict[str, dict] = {}
    print(f"{'layer':>5} {'state':>5} " + "".join(f"{a:>9}" for a in w.attributes) + "  shape separation")
    for layer in layers:
        h = hidden[layer]
        for name, feats in (("eos", h[rows, eos]), ("pad", h[:, -1]), ("word", h[rows, word_pos])):
            attrs = ("shape",) if name == "word" else w.attributes
            acc = {a: probe_accuracy(feats, [getattr(r, a) for r in records], n_train) for a in attrs}
            sep = centroid_separation(feats, [r.shape for r in records])
            results[f"{layer}/{name}"] = {**acc, "shape_separation": sep, "n_test": len(texts) - n_train}
            print(
                f"{layer:>5} {name:>5} "
                + "".join(f"{acc[a]:>9.3f}" if a in acc else f"{'':>9}" for a in w.attributes)
                + f"  {sep:8.2f}"
            )
    print(f"n = {len(texts) - n_train} held-out captions ({n_train} fit the probes); chance: shape 1/{len(w.shapes)}")
    if args.json:
        write_json(args.json, results)  # atomic


if __name__ == "__main__":
    main()
