"""Benchmark of the lockstep tracing engine against a naive loop, on a tiny SD1-shaped pipeline.

Measured in the same invocation (each configuration in a fresh worker process, so that peak memory
is that configuration's own):

* lockstep: one denoising loop per `batch` cells, rows [clean, corrupted, restored_1..B].
* naive: per traced layer, a clean generation that caches the layer's output at every UNet call,
  a corrupted generation, and a restored generation that replays the cache (batch 1 each).
* lockstep peak memory against the number of layers traced (should stay flat: it grows with the
  batch, not with layers or steps).

Peak memory is the peak resident set of the worker above its resident set just before the measured
work (CPU), or torch.cuda.max_memory_allocated above the allocation before it (CUDA).

    python benchmarks/trace_throughput.py [--steps 4] [--batch 8] [--layers 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BPE = ROOT / "tests" / "data" / "bpe_simple_vocab_16e6.txt.gz"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build(device: str):
    from locedit.models.tiny import TinySpec, build_tiny_pipeline, clip_tokenizer_files
    from locedit.scorers import PixelScorer
    from locedit.trace import GenerationSettings, Tracer, TraceSettings

    tok = clip_tokenizer_files(BPE, tempfile.mkdtemp(prefix="locedit_bench_tok_"))
    pipe = build_tiny_pipeline("sd1", tok, TinySpec(image_size=32)).to(device)
    return pipe, lambda steps: Tracer(
        pipe, PixelScorer(), GenerationSettings(steps=steps, guidance=5.0), TraceSettings()
    )


def _naive_cell(tracer, probe, seed, noise, module_name) -> float:
    """Clean run caching the layer's output per UNet call, corrupted run, restored run from the cache."""
    from locedit.hooks import Trace

    module = dict(tracer.pipe.unet.named_modules())[module_name]
    cache: list = []

    def keep(output, mod):
        cache.append(output)
        return output

    with Trace(module, retain_output=False, edit_output=keep):
        clean = tracer.generate(tracer.encode(probe, 1, None), seed)
    corrupted = tracer.generate(_rows(tracer.encode(probe, 2, tracer.noise(probe, seed, noise)), 1), seed)
    replay = iter(cache)

    def restore(output, mod):
        clean_out = next(replay)
        # Conditional half (second half of the CFG batch) takes the clean run's output.
        return _splice(output, clean_out)

    with Trace(module, retain_output=False, edit_output=restore):
        restored = tracer.generate(_rows(tracer.encode(probe, 2, tracer.noise(probe, seed, noise)), 1), seed)
    images = torch.cat([clean, corrupted, restored])
    return float(tracer.scorer.score(images, probe, images[0])[2])


def _rows(embeds: dict, row: int) -> dict:
    return {k: v[row : row + 1] for k, v in embeds.items()}


def _splice(output, clean):
    if isinstance(output, torch.Tensor):
        out = output.clone()
        half = out.shape[0] // 2
        out[half:] = clean[half:]
        return out
    if isinstance(output, tuple):
        return tuple(_splice(o, c) for o, c in zip(output, clean))
    return output


def worker(mode: str, steps: int, batch: int, n_layers: int, device: str) -> dict:
    from locedit.probes import Probe
    from locedit.trace import select_unet_cells

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    pipe, make = _build(device)
    tracer = make(steps)
    cells = select_unet_cells(tracer.layers, None)
    cells = [c for c in cells if c.state != "block"] + [c for c in cells if c.state == "block"]
    if n_layers:
        cells = cells[:n_layers]
    probe = Probe("a photo of a red cat", "cat", "object")
    # Warm-up (allocator, kernels), not measured.
    tracer.run_unet_unit(probe, 0, 3.0, cells[:1])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = _rss_bytes()
    start = time.perf_counter()
    if mode == "lockstep":
        for first in range(0, len(cells), batch):
            tracer.run_unet_unit(probe, 0, 3.0, cells[first : first + batch])
    else:
        for cell in cells:
            _naive_cell(tracer, probe, 0, 3.0, cell.modules[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "cells": len(cells),
        "seconds": seconds,
        "cells_per_s": len(cells) / seconds,
        "peak_mib": max(0, peak) / 2**20,
        "steps": steps,
        "batch": batch,
    }


def _run_worker(mode: str, args, n_layers: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--layers",
        str(n_layers),
        "--device",
        args.device,
    ]
    # glibc: serve every allocation over 16 KiB by mmap and give it back on free, so that the peak
    # resident set follows live tensors instead of heap growth and fragmentation.
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        BENCH_THREADS=str(args.threads),
        MALLOC_MMAP_THRESHOLD_="16384",
        MALLOC_TRIM_THRESHOLD_="0",
    )
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--batch", type=int, default=8, help="lockstep restored rows per loop (default 8)")
    parser.add_argument("--layers", type=int, default=0, help="layers traced (0 = all 36 non-block + 5 blocks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default 1)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch, args.layers, args.device)))
        return 0
    lock = _run_worker("lockstep", args, args.layers)
    naive = _run_worker("naive", args, args.layers)
    print(f"tiny sd1 pipeline (32x32), {args.steps} steps, CFG on, batch {args.batch}, device {args.device}")
    for r in (lock, naive):
        print(
            f"  {r['mode']:9s} {r['cells']:3d} cells  {r['seconds']:7.2f} s  {r['cells_per_s']:7.2f} cells/s  "
            f"peak +{r['peak_mib']:.1f} MiB"
        )
    print(
        f"  speed-up lockstep/naive: {lock['cells_per_s'] / naive['cells_per_s']:.2f}x; "
        f"peak memory ratio lockstep/naive: {lock['peak_mib'] / max(naive['peak_mib'], 1e-9):.2f}"
    )
    print("  lockstep peak memory vs layers traced (batch fixed):")
    base = None
    for n in (8, 16, 24, 41):  # all >= batch, so every loop has the same rows
        r = _run_worker("lockstep", args, n)
        base = base or r["peak_mib"]
        print(
            f"    {n:3d} layers: peak +{r['peak_mib']:.1f} MiB  (x{r['peak_mib'] / max(base, 1e-9):.2f} of 8 layers)"
            f"  {r['cells_per_s']:.2f} cells/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
