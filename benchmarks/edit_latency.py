"""Edit latency: DIFF-QUICKFIX (capture + solve + apply) against one full text-encoder forward.

Random text encoders of real sizes (SD-1.5: width 768, 12 layers; SD-2: 1024, 23; SDXL's second
encoder: 1280, 32) with the real CLIP tokenizer, inside a pipeline with a tiny UNet, so the timed
call is the public `quickfix(pipe, ...)` + `edit.apply(pipe)`. For 1, 10 and 100 pairs × 4
templates it times that against a full forward of the same captions (key and value captions), in
the same run, and prints the ratio. Forwards over more than --max-forward captions are timed on
that many and scaled linearly (the forward's cost is linear in the batch), which the output marks.

It also times the first edit of a process ("cold": the in-memory corpus moment dropped, as in a
fresh `locedit edit`) with the disk cache off (one forward of the whole default corpus) and with
the disk cache populated (token ids, a hash of the key weights and one file read), against the
warm edit, in a temporary cache folder. Imports and model loading, which a CLI process also pays,
are not timed.

    python benchmarks/edit_latency.py [--sizes sd15,sd2,sdxl2] [--pairs 1,10,100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from locedit import quickfix
from locedit.edit import cache
from locedit.edit.quickfix import DEFAULT_TEMPLATES, forget_moments
from locedit.models import text_encoders
from locedit.models.tiny import TinySpec, build_tiny_pipeline, clip_tokenizer_files

SIZES = {
    "sd15": TinySpec(hidden=768, text_layers=12, heads=12, intermediate=3072),
    "sd2": TinySpec(hidden=1024, text_layers=23, heads=16, intermediate=4096),
    "sdxl2": TinySpec(hidden=1280, text_layers=32, heads=20, intermediate=5120),
}
BPE = Path(__file__).resolve().parents[1] / "tests" / "data" / "bpe_simple_vocab_16e6.txt.gz"
WORDS = "red blue green golden silver ancient modern tiny giant wooden glass stone".split()
NOUNS = "castle river dragon robot forest violin teapot bridge tiger lantern".split()


def concepts(n: int, offset: int = 0) -> list[str]:
    return [f"{WORDS[(i + offset) % len(WORDS)]} {NOUNS[(i * 7 + offset) % len(NOUNS)]} {i}" for i in range(n)]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="sd15,sd2,sdxl2")
    parser.add_argument("--pairs", default="1,10,100")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-forward", type=int, default=64, help="largest batch timed for the full forward")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    tok_files = clip_tokenizer_files(BPE, tempfile.mkdtemp())
    cache.SETTINGS.folder = tempfile.mkdtemp(prefix="locedit-bench-cache-")  # never the user's cache
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(DEFAULT_TEMPLATES)} templates per pair")
    print(
        f"{'size':7} {'pairs':>5} {'captions':>8} {'edit s':>8} {'cold s':>8} {'cold+disk s':>11} "
        f"{'cold/edit':>9} {'cold+disk/edit':>14} {'forward s':>10} {'edit/forward':>12}"
    )
    for size in args.sizes.split(","):
        pipe = build_tiny_pipeline("sd1", tok_files, SIZES[size])
        handle = text_encoders(pipe)[0]
        for n in (int(x) for x in args.pairs.split(",")):
            keys, values = concepts(n), concepts(n, offset=3)
            pairs = list(zip(keys, [f"plain {v}" for v in values]))
            captions = [t.format(c) for k, v in pairs for c in (k, v) for t in DEFAULT_TEMPLATES]

            def edit_once(pipe=pipe, pairs=pairs):  # bound now: the loop rebinds both
                quickfix(pipe, pairs).apply(pipe).revert(pipe)

            def cold_edit():
                forget_moments()  # as a fresh process: no corpus moment in memory
                edit_once()

            with cache.disk_cache(False):
                cold_s = median_time(cold_edit, args.repeats)  # computes the corpus moment
            edit_once()  # populates the disk cache
            disk_s = median_time(cold_edit, args.repeats)  # reads it
            edit_s = median_time(edit_once, args.repeats)
            timed = captions[: args.max_forward]
            ids = handle.tokenize(timed)
            handle.encoder(ids[:2])  # warm-up
            fwd_s = (
                median_time(lambda ids=ids, handle=handle: handle.encoder(ids), args.repeats)
                * len(captions)
                / len(timed)
            )
            mark = "*" if len(timed) < len(captions) else " "
            print(
                f"{size:7} {n:5d} {len(captions):8d} {edit_s:8.3f} {cold_s:8.3f} {disk_s:11.3f} {cold_s / edit_s:9.1f} "
                f"{disk_s / edit_s:14.2f} {fwd_s:9.3f}{mark} {edit_s / fwd_s:12.3f}"
            )
    print("* forward timed on the first --max-forward captions and scaled linearly to all of them")
    print("edit = capture (layer-0 early exit) + float64 solve + apply + revert, with the default covariance term")
    print("edit: warm (corpus moment in memory); cold: first edit of a process, disk cache off (computes the")
    print("corpus moment); cold+disk: first edit of a process with the disk cache populated (medians of --repeats)")
    print("target at sd15 × 1 pair: ≤ 0.05 s, ≤ 0.5× forward; cold+disk close to edit")


if __name__ == "__main__":
    main()
