"""Heatmaps of a trace run: UNet layers × attribute and × prompt; text-encoder tokens × layers per
prompt in the ROME style (subject tokens marked with *). Averages leave out prompts whose corruption
did not destroy the attribute (the `destroyed` column), unless no prompt was destroyed at all.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from locedit.trace.store import read_results


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _effect(row: dict) -> float:
    return float(row["effect"]) if row.get("effect") not in (None, "") else math.nan


def _kept(rows: list[dict]) -> tuple[list[dict], bool]:
    """Rows of destroyed prompts; all rows (and False) when no prompt was destroyed."""
    kept = [r for r in rows if r.get("destroyed") == "1"]
    return (kept, True) if kept else (rows, False)


def unet_table(rows: list[dict], by: str = "attribute") -> tuple[list[str], list[str], list[list[float]], bool]:
    """(layers, columns, mean effect [layer][column], filtered) over UNet rows, grouped by `by`
    ("attribute" or "prompt"). With by="prompt" flagged prompts stay (marked by the caller)."""
    unet = [r for r in rows if r["component"] == "unet"]
    if by == "attribute":
        unet, filtered = _kept(unet)
    else:
        filtered = False
    layers = list(dict.fromkeys(r["layer"] for r in unet))
    key = (lambda r: r["attribute"]) if by == "attribute" else (lambda r: f"{int(r['prompt_index']):d}: {r['prompt']}")
    columns = list(dict.fromkeys(key(r) for r in unet))
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in unet:
        cells[(r["layer"], key(r))].append(_effect(r))
    grid = [[_mean(cells.get((layer, col), [])) for col in columns] for layer in layers]
    return layers, columns, grid, filtered


def text_grid(rows: list[dict], prompt_index: int, encoder: str, state: str) -> list[list[float]]:
    """Mean effect (over seeds) [token][layer] of one prompt, encoder and state."""
    sel = [
        r
        for r in rows
        if r["component"] == "text-encoder"
        and int(r["prompt_index"]) == prompt_index
        and r["encoder"] == encoder
        and r["state"] == state
    ]
    if not sel:
        return []
    n_tok = 1 + max(int(r["token"]) for r in sel)
    n_lay = 1 + max(int(r["layer"]) for r in sel)
    acc: dict[tuple[int, int], list[float]] = defaultdict(list)
    for r in sel:
        acc[(int(r["token"]), int(r["layer"]))].append(_effect(r))
    return [[_mean(acc.get((t, layer), [])) for layer in range(n_lay)] for t in range(n_tok)]


# ROME's token categories (plus CLIP's start token), in plot order.
TOKEN_CATEGORIES = (
    "start token",
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further tokens",
    "last token",
    "padding",
)


def token_categories(n_tokens: int, start: int, end: int, padding: bool = False) -> dict[str, list[int]]:
    """Token positions of each ROME category for a prompt of `n_tokens` (BOS..EOS), subject [start, end).

    A one-token subject counts as both its first and its last token, as in ROME. With `padding`,
    row `n_tokens` is the padding row (every position after EOS restored together).
    """
    last = n_tokens - 1
    cats = {
        "start token": [0],
        "first subject": [start],
        "middle subject": list(range(start + 1, end - 1)),
        "last subject": [end - 1],
        "first subsequent": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last],
        "padding": [n_tokens] if padding else [],
    }
    return cats


def text_summary(rows: list[dict], config: dict, encoder: str, state: str) -> tuple[list[list[float]], bool]:
    """Mean effect [category][layer] over prompts (destroyed ones; all if none), ROME's summary figure."""
    e = config["traced"]["encoders"].index(encoder)
    prompts = sorted({int(r["prompt_index"]) for r in rows if r["component"] == "text-encoder"})
    destroyed = {int(r["prompt_index"]) for r in rows if r.get("destroyed") == "1"}
    chosen = [p for p in prompts if p in destroyed] or prompts
    acc: dict[tuple[str, int], list[float]] = defaultdict(list)
    n_layers = 0
    for pi in chosen:
        grid = text_grid(rows, pi, encoder, state)
        if not grid:
            continue
        n_layers = max(n_layers, len(grid[0]))
        start, end = config["subject_spans"][pi][e]
        tokens = config["tokens"][pi][e]
        has_padding = bool(tokens) and tokens[-1].startswith("<padding")
        for cat, toks in token_categories(len(tokens) - has_padding, start, end, has_padding).items():
            for layer in range(len(grid[0])):
                values = [grid[t][layer] for t in toks if t < len(grid)]
                if values:
                    acc[(cat, layer)].append(_mean(values))
    grid = [[_mean(acc.get((cat, layer), [])) for layer in range(n_layers)] for cat in TOKEN_CATEGORIES]
    return grid, bool(destroyed & set(prompts))


def _short(name: str) -> str:
    return (
        name.replace("down_blocks", "down")
        .replace("up_blocks", "up")
        .replace("mid_block", "mid")
        .replace("attentions", "at")
        .replace("transformer_blocks", "tb")
        .replace("resnets", "res")
    )


def _heatmap(grid, row_labels, col_labels, title, path: Path, cmap="Purples", xlabel="", ylabel=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(grid, dtype=float) if grid else np.zeros((0, 0))
    height = max(2.5, 0.22 * len(row_labels) + 1.5)
    width = max(4.0, 0.5 * len(col_labels) + 3.5)
    fig, ax = plt.subplots(figsize=(width, height))
    finite = data[np.isfinite(data)] if data.size else data
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(row_labels)), labels=row_labels, fontsize=7)
    ax.set_xticks(range(len(col_labels)), labels=col_labels, fontsize=7, rotation=45, ha="right")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="normalized effect")
    fig.tight_layout()
    from locedit.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def draw_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw every heatmap of the run in `run_dir` into `out` (default RUNDIR/report); returns paths."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a trace run (no config.json); give the --out folder of `locedit trace`"
        )
    config = json.loads((run / "config.json").read_text())
    rows = read_results(run)
    target = Path(out) if out is not None else run / "report"
    written: list[Path] = []
    flagged = sorted({int(r["prompt_index"]) for r in rows if r.get("destroyed") != "1"})
    if config["component"] == "unet":
        layers, cols, grid, filtered = unet_table(rows, "attribute")
        note = "" if filtered else " (no prompt destroyed by the corruption: all averaged)"
        written.append(
            _heatmap(
                grid,
                [_short(x) for x in layers],
                cols,
                f"UNet causal effect by attribute, noise {config['noise']:.3g}{note}",
                target / "unet_by_attribute.png",
                xlabel="attribute",
            )
        )
        layers, cols, grid, _ = unet_table(rows, "prompt")
        cols = [c + (" [not destroyed]" if int(c.split(":")[0]) in flagged else "") for c in cols]
        written.append(
            _heatmap(
                grid,
                [_short(x) for x in layers],
                [c[:48] for c in cols],
                "UNet causal effect by prompt (mean over seeds)",
                target / "unet_by_prompt.png",
            )
        )
        return written
    cmaps = {"residual": "Purples", "attn": "Reds", "mlp": "Greens"}
    states = config["traced"]["states"]
    encoders = config["traced"]["encoders"]
    for encoder in encoders:
        for state in states:
            grid, filtered = text_summary(rows, config, encoder, state)
            if not grid or not grid[0]:
                continue
            note = "" if filtered else " (none destroyed: all averaged)"
            categories = list(TOKEN_CATEGORIES) if config.get("padding") else list(TOKEN_CATEGORIES[:-1])
            written.append(
                _heatmap(
                    grid[: len(categories)],
                    categories,
                    [str(i) for i in range(len(grid[0]))],
                    f"{encoder} {state}: mean over prompts{note}",
                    target / f"text_summary_{encoder}_{state}.png",
                    cmap=cmaps.get(state, "Purples"),
                    xlabel="layer",
                )
            )
    for pi, probe in enumerate(config["probes"]):
        for e, encoder in enumerate(encoders):
            tokens = config["tokens"][pi][e]
            start, end = config["subject_spans"][pi][e]
            labels = [tok.replace("</w>", "") + ("*" if start <= t < end else "") for t, tok in enumerate(tokens)]
            for state in states:
                grid = text_grid(rows, pi, encoder, state)
                if not grid:
                    continue
                flag = " [not destroyed]" if pi in flagged else ""
                written.append(
                    _heatmap(
                        grid,
                        labels[: len(grid)],
                        [str(layer) for layer in range(len(grid[0]))],
                        f"{encoder} {state}: {probe['prompt'][:50]!r}{flag}",
                        target / f"text_P{pi:04d}_{encoder}_{state}.png",
                        cmap=cmaps.get(state, "Purples"),
                        xlabel="layer",
                        ylabel="token (* = subject)",
                    )
                )
    return written
