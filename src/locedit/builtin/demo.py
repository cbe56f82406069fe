"""`locedit demo`: the whole system on the built-in shapes model, end to end, offline.

Traces the text encoder and the UNet for a few probes of the shapes world, removes one style with
DIFF-QUICKFIX (library defaults), judges efficacy / generality / specificity with the world's
classifier before and after, and writes a folder with heatmaps, before/after grids, the edit file
and a summary table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from locedit.builtin.world import World
from locedit.errors import InvalidInputError
from locedit.io import atomic_dir, write_json
from locedit.options import is_int, is_number, option, require

DEMO_MARKER = "demo.json"


@dataclass
class DemoSettings:
    """What the demo runs. Defaults fit in about 2 minutes on a 2-core CPU (see its summary's timings)."""

    steps: int = option(20, parse=int, help="denoising steps of the evaluation generations")  # DPM-Solver++
    # denoising steps of the traced generations (~1600 cells): 6 keeps the demo near 2 minutes (8 traces a
    # third longer)
    trace_steps: int = 6
    guidance: float = 5.0  # classifier-free guidance scale (the built-in model is trained for 5)
    # trace seeds (each also draws its own corruption noise): six, so that heatmap cells average several
    # destroyed (prompt, seed) pairs and carry a 95% interval
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    # corruption noise scale in embedding stds: at 12 (6 steps) the colour probe is destroyed for 5 of the 6
    # seeds, the artist for 4, the style word for 1 (it resists every scale up to 24); the built-in encoder
    # shrugs off ROME's 3; "auto" also works, slower
    noise: float | str = 12.0
    trace_batch: int = 32  # restored rows per denoising loop
    probe_count: int = 3  # how many of shapes_probes() to trace (colour, style word, artist first)
    # text-encoder states traced: self-attention outputs, where the built-in encoder holds what it knows
    # (add "residual" or "mlp" for their maps; each adds as much time again to the text trace)
    text_states: tuple[str, ...] = ("attn",)
    unet_layers: tuple[str, ...] | None = None  # UNet kinds/globs traced; None = every layer
    edit_key: str = "striped"  # style removed by the demo edit
    edit_value: str = "plain"  # ... and what it becomes
    # held-out prompts per evaluation group (6 groups, each judged before/after/null)
    eval_per_group: int = option(16, parse=int, metavar="N", help="held-out prompts per evaluation group")
    eval_batch: int = 32  # images per pipeline call of the evaluation (the progress bar moves per batch)

    def __post_init__(self):
        for name in ("steps", "trace_steps", "trace_batch", "eval_per_group", "eval_batch"):
            require(self, name, is_int(getattr(self, name), 1), "a positive integer")
        require(self, "guidance", is_number(self.guidance), "a number")
        require(self, "seeds", bool(self.seeds) and all(is_int(x, 0) for x in self.seeds), "non-negative integers")
        require(
            self, "noise", self.noise == "auto" or (is_number(self.noise) and self.noise > 0), "a number > 0 or auto"
        )
        require(
            self,
            "probe_count",
            is_int(self.probe_count, 1) and self.probe_count <= len(shapes_probes()),
            f"between 1 and {len(shapes_probes())}",
        )
        require(self, "edit_key", bool(str(self.edit_key).strip()), "a concept of the shapes world")
        require(self, "edit_value", bool(str(self.edit_value).strip()), "a concept of the shapes world")


def shapes_probes() -> list[dict]:
    """A small probe set of the shapes world: colours, styles (word and artist), a shape; each with the
    `altered` prompt LocoGen feeds (the attribute's value swapped for another, or the artist for the
    plain-background one), so `locedit locogen --probes default` runs on the built-in models."""
    return [
        {
            "prompt": "a red circle on a plain background",
            "subject": "red",
            "attribute": "colour",
            "value": "red",
            "altered": "a blue circle on a plain background",
        },
        {
            "prompt": "a yellow star on a striped background",
            "subject": "striped",
            "attribute": "style",
            "value": "striped",
            "altered": "a yellow star on a plain background",
        },
        {
            "prompt": "a green cross in the style of karl brenner",
            "subject": "karl brenner",
            "attribute": "style",
            "value": "striped",
            "altered": "a green cross in the style of mira solen",
        },
        {
            "prompt": "a photo of a blue square on a dotted background",
            "subject": "blue",
            "attribute": "colour",
            "value": "blue",
            "altered": "a photo of a red square on a dotted background",
        },
        {
            "prompt": "a purple triangle on a checkered background",
            "subject": "triangle",
            "attribute": "object",
            "value": "triangle",
            "altered": "a purple square on a checkered background",
        },
    ]


def model_probes_text(w: World) -> str:
    """A built-in model folder's locedit_probes.jsonl for world `w` (the probes `--probes default` traces on
    it): a comment line, then every shapes_probes() record as one JSON object per line. Their prompts are
    captions of both built-in worlds (scenes has every word, template and value of shapes); raises
    InvalidInputError for a world that lacks a word of a prompt or of its altered prompt, or a probe's value."""
    words, values = set(w.vocabulary()), {*w.shapes, *w.colours, *w.styles}
    for probe in shapes_probes():
        text = probe["prompt"] + " " + probe.get("altered", "")
        missing = [word for word in text.split() if word not in words]
        if missing or probe["value"] not in values:
            raise InvalidInputError(
                f"probe {probe['prompt']!r} does not fit the {w.name} world (unknown: {missing or probe['value']}); "
                "give the world its own probe list in locedit.builtin.demo"
            )
    header = f"# builtin:{w.name} default probes, written by locedit.builtin.demo.model_probes_text\n"
    return header + "".join(json.dumps(p) + "\n" for p in shapes_probes())


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / DEMO_MARKER).is_file())):
        raise FileExistsError(f"--out {str(out)!r} exists and is not an earlier demo folder; choose a new folder")


def _top_cells(rows: list[dict], component: str, config: dict, n: int = 5) -> list[dict]:
    """The `n` most causal single states of a trace's rows, each the mean effect over its prompt's
    destroyed seeds with a 95% t-interval [lo, hi] (None for one seed) and n: self-attention outputs for the
    text encoder (restoring the residual stream at the subject trivially restores everything), layers below
    whole blocks for the UNet. Ranked by mean; cells of a single destroyed seed (no interval) come after those
    with an interval."""
    from locedit.report.heatmaps import cell_stats, pairs_of

    if component == "text-encoder":
        rows = [r for r in rows if r["state"] == "attn"] or rows
        fields = ("prompt", "layer", "token", "state")
    else:
        rows = [r for r in rows if r["state"] != "block"] or rows
        fields = ("prompt", "layer", "state")
    destroyed, _ = pairs_of(rows)
    stats = cell_stats(rows, lambda r: [(int(r["prompt_index"]), *(r[f] for f in fields))], destroyed)
    best = sorted(stats.items(), key=lambda kv: (kv[1].n < 2, -kv[1].mean))[:n]
    out = []
    for (pi, *values), s in best:
        cell = dict(zip(fields, values))
        if "token" in cell:  # the token's text after its index, e.g. "2 red*" (* = subject)
            tokens, (start, end) = config["tokens"][pi][0], config["subject_spans"][pi][0]
            t = int(cell["token"])
            cell["token"] = f"{t} {tokens[t].replace('</w>', '')}{'*' if start <= t < end else ''}"
        bounds = {"lo": None, "hi": None} if s.n < 2 else {"lo": round(s.lo, 3), "hi": round(s.hi, 3)}
        out.append(cell | {"effect": round(s.mean, 3), **bounds, "n": s.n})
    return out


def _destroyed_counts(rows: list[dict]) -> dict[str, list[int]]:
    """Per prompt: [(prompt, seed) pairs whose corruption destroyed the attribute, pairs traced]."""
    from locedit.report.heatmaps import pairs_of

    destroyed, every = pairs_of(rows)
    prompts = {int(r["prompt_index"]): r["prompt"] for r in rows}
    return {prompts[pi]: [sum(p[0] == pi for p in destroyed), sum(p[0] == pi for p in every)] for pi in sorted(prompts)}


def run_demo(out: str | Path = "locedit-demo", settings: DemoSettings | None = None, quiet: bool = False) -> dict:
    """Run the demo into `out` (replaced if it holds an earlier demo); returns the summary dict."""
    import torch

    from locedit.edit import quickfix
    from locedit.models import load_pipeline

    cfg = settings or DemoSettings()
    out = Path(out)
    _check_out(out)
    say = (lambda *a: None) if quiet else print
    t_start = time.perf_counter()
    with atomic_dir(out, replace=True) as work:
        torch.manual_seed(0)
        pipe = load_pipeline("builtin:shapes")
        probes_file = _write_probes(work, cfg.probe_count)
        summary: dict = {"settings": asdict(cfg), "trace": {}, "timings_s": {}}

        for component in ("text-encoder", "unet"):
            t0 = time.perf_counter()
            say(f"tracing the {component} ...")
            summary["trace"][component] = _trace(pipe, component, cfg, probes_file, work, quiet)
            summary["timings_s"][f"trace_{component}"] = round(time.perf_counter() - t0, 1)

        say(f"editing: {cfg.edit_key!r} -> {cfg.edit_value!r} with DIFF-QUICKFIX ...")
        t0 = time.perf_counter()
        edit = quickfix(pipe, [(cfg.edit_key, cfg.edit_value)])
        summary["timings_s"]["edit"] = round(time.perf_counter() - t0, 3)
        edit.save(work / "edit.safetensors")

        t0 = time.perf_counter()
        summary["edit"] = _evaluate(pipe, edit, cfg, work, quiet, say)
        summary["timings_s"]["evaluate"] = round(time.perf_counter() - t0, 1)
        summary["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
        _write_summary(work, summary)
    return summary


def _write_probes(work: Path, count: int) -> Path:
    """The first `count` of shapes_probes() as a probe file in `work`."""
    probes_file = work / "probes.jsonl"
    probes_file.write_text("".join(json.dumps(p) + "\n" for p in shapes_probes()[:count]))
    return probes_file


def _trace(pipe, component: str, cfg: DemoSettings, probes_file: Path, work: Path, quiet: bool) -> dict:
    """Trace `component` into work/trace-<component> and draw its heatmaps; its summary entry
    (noise, cells, top cells)."""
    from locedit.report.heatmaps import draw_report
    from locedit.trace import GenerationSettings, TraceRequest, run_trace
    from locedit.trace.store import read_results

    run_dir = work / f"trace-{component}"
    if component == "text-encoder":
        layers = list(cfg.text_states)
    else:
        layers = list(cfg.unet_layers) if cfg.unet_layers else None
    req = TraceRequest(
        model="builtin:shapes",
        out=str(run_dir),
        probes=str(probes_file),
        component=component,
        seeds=list(cfg.seeds),
        generation=GenerationSettings(steps=cfg.trace_steps, guidance=cfg.guidance),
        batch=cfg.trace_batch,
        scorer="builtin",
        noise=cfg.noise,
        layers=layers,
    )
    run_trace(req, pipe=pipe, quiet=quiet)
    draw_report(run_dir, work / "heatmaps" / component)
    rows = read_results(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "noise": config.get("noise"),
        "cells": int(config.get("cells", len(rows))),
        "destroyed": _destroyed_counts(rows),
        "top_cells": _top_cells(rows, component, config),
    }


def _evaluate(pipe, edit, cfg: DemoSettings, work: Path, quiet: bool, say) -> dict:
    """Judge `edit` on the held-out builtin suite (before, after, null control) into work/eval; the
    summary's edit entry (pairs, settings, rates, weight change)."""
    from tqdm.auto import tqdm

    from locedit.builtin.edit_suite import suite_for_edit
    from locedit.evaluate.edit_eval import EvalSettings
    from locedit.evaluate.results import write_results
    from locedit.evaluate.run import evaluate

    items = suite_for_edit(edit, per_group=cfg.eval_per_group, seed=0, split="test")
    settings = EvalSettings(steps=cfg.steps, guidance=cfg.guidance, batch=cfg.eval_batch)
    say(f"evaluating the edit on {len(items)} held-out prompts: before, after, and a random ΔW of the same norm ...")
    with tqdm(total=3 * len(items), desc="evaluate", unit="image", disable=quiet) as bar:
        report, info = evaluate(pipe, edit, items, "builtin", settings, progress=bar.update)
    write_results(report, work / "eval", {"model": "builtin:shapes", "edit": "edit.safetensors", **info})
    return {
        "pairs": edit.meta["pairs"],
        "settings": {
            k: edit.meta[k]
            for k in (
                "lam",
                "positions",
                "templates",
                "preserve",
                "layer",
                "corpus_weight",
                "corpus_keys",
                "module",
                "vocab_weight",
            )
        },
        "rows": report.rows(),
        "weight": report.weight,
    }


def _write_summary(work: Path, summary: dict) -> None:
    """summary.md, summary.json and the marker that lets a later demo replace this folder."""
    (work / "summary.md").write_text(summary_markdown(summary))
    write_json(work / "summary.json", summary)
    write_json(work / DEMO_MARKER, {"locedit_demo": True})


def summary_markdown(summary: dict) -> str:
    """The demo's summary as a Markdown report."""
    lines = ["# locedit demo on builtin:shapes", ""]
    for component, info in summary["trace"].items():
        lines += [f"## Causal tracing: {component} (noise {info['noise']:.2f}, {info['cells']} cells)", ""]
        counts = info["destroyed"]
        k, m = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        lines += [
            f"The corruption destroyed the attribute in {k} of {m} (prompt, seed) pairs ("
            + "; ".join(f"{p!r}: {c[0]} of {c[1]}" for p, c in counts.items())
            + "). Top cells: mean normalized effect over the prompt's destroyed seeds with its 95% t-interval, "
            "ranked by mean (cells of one seed, without interval, last); heatmaps and every "
            "cell's interval in heatmaps/" + component + "/.",
            "",
        ]
        cols = [c for c in info["top_cells"][0] if c not in ("effect", "lo", "hi", "n")] if info["top_cells"] else []
        lines += ["| " + " | ".join([*cols, "effect [95% CI]", "n"]) + " |", "|" + "---|" * (len(cols) + 2)]
        for c in info["top_cells"]:
            effect = f"{c['effect']:.2f}" + ("" if c["lo"] is None else f" [{c['lo']:.2f}, {c['hi']:.2f}]")
            lines.append("| " + " | ".join([*(str(c[k]) for k in cols), effect, str(c["n"])]) + " |")
        lines.append("")
    e = summary["edit"]
    lines += [
        f"## DIFF-QUICKFIX: {', '.join(f'{k!r} -> {v!r}' for k, v in e['pairs'])}",
        "",
        f"settings: {e['settings']}",
        "",
        "Judged on held-out prompts (none of them fitted), image by image with the same seeds before and after; "
        "95% Wilson intervals; null control: a random ΔW of the same norm.",
        "",
        "| group | metric | n | rate [95% CI] | null control |",
        "|---|---|---|---|---|",
    ]
    for r in e["rows"]:
        rate = "-" if r["rate"] is None else f"{r['rate']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
        null = "-" if r.get("null_rate") is None else f"{r['null_rate']:.2f} [{r['null_lo']:.2f}, {r['null_hi']:.2f}]"
        lines.append(f"| {r['group']} | {r['metric']} | {r['n']} | {rate} | {null} |")
    for name, w in e["weight"]["tensors"].items():
        lines += ["", f"weight change of {name}: ||ΔW||/||W|| = {w['rel_norm']:.3f}, rank {w['rank']}"]
    lines += [
        "",
        "efficacy: prompts naming the style in the edit's own phrasings (captions not fitted) that no longer "
        "show it; generality: the same in held-out phrasings; neighbours / attributes / entities: prompts without "
        "it that keep what they asked for; other_route: the same look asked for by another name (not counted).",
        "",
        "timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)
