"""Heatmaps of a trace run, with their uncertainty: UNet layers × attribute and × prompt; text-encoder
tokens × layers per prompt and token categories × layers over prompts, in the ROME style.

Each cell is the mean normalized effect over the (prompt, seed) pairs whose corruption destroyed the
attribute (the `destroyed` column of results.csv), with a 95% Student-t interval over those pairs
(mean ± t(0.975, n − 1) · sd / √n; none for n = 1) and n. A pair contributes one value per cell: its
effect there (for a token category, the mean over the category's tokens). A map none of whose pairs
was destroyed is averaged over all its pairs, drawn in grey and titled as not interpretable.

Every map is a PNG with two panels (mean; 95% interval half-width), small maps annotated mean ± half-width
in each cell; `heatmaps.csv` holds mean, lo, hi and n of every cell of every map.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from locedit.io import atomic_path
from locedit.trace.store import read_results

Pair = tuple[int, int]  # (prompt index, seed)

ANNOTATE_MAX_CELLS = 80  # maps with at most this many cells get "mean ± half-width" written in each cell
CSV_COLUMNS = ("heatmap", "row", "column", "mean", "lo", "hi", "n", "destroyed_only", "pairs_destroyed", "pairs")

# Student t 0.975 quantiles for 1..30 degrees of freedom (beyond: the Cornish–Fisher expansion).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` ≥ 1 degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1 (got {df})")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class CellStat:
    """One heatmap cell: mean normalized effect over n (prompt, seed) pairs and its 95% t-interval [lo, hi]
    (NaN bounds for n < 2; everything NaN for n = 0)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN when there is no interval)."""
        return (self.hi - self.lo) / 2


EMPTY = CellStat(math.nan, math.nan, math.nan, 0)


def t_interval(values: Sequence[float]) -> CellStat:
    """Mean of `values` (NaNs dropped) with its 95% Student-t interval.

    The bounds are not clipped: the values it averages, normalized effects, have no range to clip to (a
    restoration can overshoot the clean score, > 1, or move away from it, < 0). Rates, which live in
    [0, 1], get Wilson intervals instead (evaluate.edit_eval.wilson), which stay inside it.
    """
    values = [float(v) for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return EMPTY
    mean = sum(values) / n
    if n == 1:
        return CellStat(mean, math.nan, math.nan, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return CellStat(mean, mean - half, mean + half, n)


def _effect(row: dict) -> float:
    return float(row["effect"]) if row.get("effect") not in (None, "") else math.nan


def pair_of(row: dict) -> Pair:
    """The (prompt index, seed) pair a results.csv row belongs to."""
    return int(row["prompt_index"]), int(row["seed"])


def pairs_of(rows: Iterable[dict]) -> tuple[set[Pair], set[Pair]]:
    """(destroyed pairs, all pairs) of `rows`."""
    destroyed: set[Pair] = set()
    every: set[Pair] = set()
    for r in rows:
        every.add(pair_of(r))
        if r.get("destroyed") == "1":
            destroyed.add(pair_of(r))
    return destroyed, every


def cell_stats(
    rows: Iterable[dict], keys: Callable[[dict], Iterable[Hashable]], pairs: set[Pair]
) -> dict[Hashable, CellStat]:
    """Per cell key: the t-interval over `pairs` of each pair's mean effect in that cell.

    `keys(row)` names the cell(s) a row counts in (a token in two ROME categories counts in both).
    """
    acc: dict[Hashable, dict[Pair, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        pair = pair_of(r)
        value = _effect(r)
        if pair not in pairs or math.isnan(value):
            continue
        for key in keys(r):
            acc[key][pair].append(value)
    return {key: t_interval([sum(v) / len(v) for v in by_pair.values()]) for key, by_pair in acc.items()}


@dataclass
class Heatmap:
    """One heatmap: per-cell statistics [row][column] and the (prompt, seed) pairs they average.

    Attributes:
        name: file stem of its PNG (and its name in heatmaps.csv).
        what: what the map shows (the first part of its title).
        cells: CellStat per [row][column].
        destroyed: the map's pairs whose corruption destroyed the attribute (those averaged).
        pairs: all the map's pairs (all are averaged when none was destroyed).
    """

    name: str
    what: str
    row_labels: list[str]
    col_labels: list[str]
    cells: list[list[CellStat]]
    destroyed: int
    pairs: int
    xlabel: str = ""
    ylabel: str = ""
    cmap: str = "Purples"
    meta: dict = field(default_factory=dict)

    @property
    def interpretable(self) -> bool:
        """Whether any of the map's pairs was destroyed (else its cells average undestroyed pairs)."""
        return self.destroyed > 0

    @property
    def title(self) -> str:
        """What the map shows, and how many (prompt, seed) pairs were destroyed and used."""
        if self.interpretable:
            return f"{self.what} · {self.destroyed} of {self.pairs} (prompt, seed) pairs destroyed"
        return f"{self.what} · none of {self.pairs} (prompt, seed) pairs destroyed: not interpretable"


def _table(
    name: str,
    what: str,
    rows: list[dict],
    key: Callable[[dict], Iterable[tuple[Hashable, Hashable]]],
    row_keys: list[Hashable],
    col_keys: list[Hashable],
    row_labels: list[str] | None = None,
    **kwargs,
) -> Heatmap:
    """A Heatmap over `rows`: cells keyed (row key, column key) by `key`, over the rows' destroyed pairs
    (all pairs when none was destroyed); labels default to the keys."""
    destroyed, every = pairs_of(rows)
    stats = cell_stats(rows, key, destroyed or every)
    cells = [[stats.get((r, c), EMPTY) for c in col_keys] for r in row_keys]
    labels = row_labels if row_labels is not None else [str(r) for r in row_keys]
    return Heatmap(name, what, labels, [str(c) for c in col_keys], cells, len(destroyed), len(every), **kwargs)


def unet_by_attribute(rows: list[dict], noise: float | None = None) -> Heatmap:
    """UNet layers × attribute, over the destroyed (prompt, seed) pairs of each attribute's probes."""
    unet = [r for r in rows if r["component"] == "unet"]
    layers = list(dict.fromkeys(r["layer"] for r in unet))
    columns = list(dict.fromkeys(r["attribute"] for r in unet))
    what = "UNet · causal effect by attribute" + (f" · noise {noise:.3g}" if noise is not None else "")
    return _table(
        "unet_by_attribute",
        what,
        unet,
        lambda r: [(r["layer"], r["attribute"])],
        layers,
        columns,
        xlabel="attribute",
        meta={"component": "unet"},
    )


def _prompt_label(row: dict) -> str:
    return f"{int(row['prompt_index']):d}: {row['prompt']}"


def unet_by_prompt(rows: list[dict]) -> Heatmap:
    """UNet layers × prompt: each prompt's column over its destroyed seeds (blank when none was)."""
    unet = [r for r in rows if r["component"] == "unet"]
    layers = list(dict.fromkeys(r["layer"] for r in unet))
    prompts = list(dict.fromkeys(_prompt_label(r) for r in unet))
    destroyed, every = pairs_of(unet)
    used = destroyed or every
    stats = cell_stats(unet, lambda r: [(r["layer"], _prompt_label(r))], used)
    per_prompt = {
        label: (
            sum(1 for p in destroyed if p[0] == int(label.split(":")[0])),
            sum(1 for p in every if p[0] == int(label.split(":")[0])),
        )
        for label in prompts
    }
    cols = [f"{label[:40]} ({k}/{m})" for label, (k, m) in per_prompt.items()]
    cells = [[stats.get((layer, label), EMPTY) for label in prompts] for layer in layers]
    return Heatmap(
        "unet_by_prompt",
        "UNet · causal effect by prompt (destroyed/all seeds)",
        layers,
        cols,
        cells,
        len(destroyed),
        len(every),
        meta={"component": "unet"},
    )


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


def _text_rows(rows: list[dict], encoder: str, state: str, prompt_index: int | None = None) -> list[dict]:
    return [
        r
        for r in rows
        if r["component"] == "text-encoder"
        and r["encoder"] == encoder
        and r["state"] == state
        and (prompt_index is None or int(r["prompt_index"]) == prompt_index)
    ]


def _n_layers(rows: list[dict]) -> int:
    return 1 + max(int(r["layer"]) for r in rows)


def text_prompt(rows: list[dict], config: dict, prompt_index: int, encoder: str, state: str) -> Heatmap | None:
    """Tokens × layers of one prompt, encoder and state, over the prompt's destroyed seeds; None if not traced."""
    sel = _text_rows(rows, encoder, state, prompt_index)
    if not sel:
        return None
    e = config["traced"]["encoders"].index(encoder)
    tokens = config["tokens"][prompt_index][e]
    start, end = config["subject_spans"][prompt_index][e]
    n_tok = 1 + max(int(r["token"]) for r in sel)
    labels = [tok.replace("</w>", "") + ("*" if start <= t < end else "") for t, tok in enumerate(tokens)][:n_tok]
    labels += [str(t) for t in range(len(labels), n_tok)]
    probe = config["probes"][prompt_index]
    return _table(
        f"text_P{prompt_index:04d}_{encoder}_{state}",
        f"{encoder} · {state} · {probe['attribute']} · {probe['prompt'][:50]!r}",
        sel,
        lambda r: [(int(r["token"]), r["layer"])],
        list(range(n_tok)),
        [str(layer) for layer in range(_n_layers(sel))],
        row_labels=labels,
        xlabel="layer",
        ylabel="token (* = subject)",
        cmap=_CMAPS.get(state, "Purples"),
        meta={"component": "text-encoder", "prompt_index": prompt_index, "encoder": encoder, "state": state},
    )


def text_summary(rows: list[dict], config: dict, encoder: str, state: str) -> Heatmap | None:
    """ROME's summary figure: token category × layer over the destroyed (prompt, seed) pairs of every
    prompt (each pair's value in a category: its mean over the category's tokens); None if not traced."""
    sel = _text_rows(rows, encoder, state)
    if not sel:
        return None
    e = config["traced"]["encoders"].index(encoder)
    categories_of: dict[tuple[int, int], list[str]] = {}  # (prompt, token) -> its categories
    for pi in sorted({int(r["prompt_index"]) for r in sel}):
        start, end = config["subject_spans"][pi][e]
        tokens = config["tokens"][pi][e]
        has_padding = bool(tokens) and tokens[-1].startswith("<padding")
        for cat, toks in token_categories(len(tokens) - has_padding, start, end, has_padding).items():
            for t in toks:
                categories_of.setdefault((pi, t), []).append(cat)
    categories = list(TOKEN_CATEGORIES) if config.get("padding") else list(TOKEN_CATEGORIES[:-1])
    attributes = ", ".join(dict.fromkeys(r["attribute"] for r in sel))
    return _table(
        f"text_summary_{encoder}_{state}",
        f"{encoder} · {state} · {attributes} · mean over prompts",
        sel,
        lambda r: [(cat, r["layer"]) for cat in categories_of.get((int(r["prompt_index"]), int(r["token"])), [])],
        categories,
        [str(layer) for layer in range(_n_layers(sel))],
        xlabel="layer",
        cmap=_CMAPS.get(state, "Purples"),
        meta={"component": "text-encoder", "encoder": encoder, "state": state},
    )


_CMAPS = {"residual": "Purples", "attn": "Reds", "mlp": "Greens"}


def heatmaps(run_dir: str | Path) -> list[Heatmap]:
    """Every heatmap of the trace run in `run_dir` (statistics only; nothing drawn)."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(run)!r} is not a trace run (no config.json); give the --out folder of `locedit trace`"
        )
    config = json.loads((run / "config.json").read_text())
    rows = read_results(run)
    if config["component"] == "unet":
        return [unet_by_attribute(rows, config.get("noise")), unet_by_prompt(rows)]
    maps: list[Heatmap] = []
    encoders, states = config["traced"]["encoders"], config["traced"]["states"]
    for encoder in encoders:
        for state in states:
            maps.append(text_summary(rows, config, encoder, state))
    for pi in range(len(config["probes"])):
        for encoder in encoders:
            for state in states:
                maps.append(text_prompt(rows, config, pi, encoder, state))
    return [m for m in maps if m is not None]


def _short(name: str) -> str:
    return (
        name.replace("down_blocks", "down")
        .replace("up_blocks", "up")
        .replace("mid_block", "mid")
        .replace("attentions", "at")
        .replace("transformer_blocks", "tb")
        .replace("resnets", "res")
    )


def n_note(h: Heatmap) -> str:
    """How many (prompt, seed) pairs the map's cells average, and whether they have intervals."""
    ns = sorted({c.n for row in h.cells for c in row if c.n > 0})
    if not ns:
        return "no cell has a value"
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
    if ns[-1] < 2:
        return f"{n} pair per cell: no interval"
    return f"{n} pairs per cell · right: 95% t-interval half-width"


def draw_heatmap(h: Heatmap, path: str | Path) -> Path:
    """Draw `h` as a PNG file (atomically): mean effect (left) and 95% interval half-width (right); grey when
    not interpretable."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(heatmap_png(h))
    return path


def heatmap_png(h: Heatmap) -> bytes:
    """The PNG bytes of `h` as draw_heatmap draws it (for pages that embed their images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mean = np.array([[c.mean for c in row] for row in h.cells], dtype=float).reshape(len(h.row_labels), -1)
    half = np.array([[c.half_width for c in row] for row in h.cells], dtype=float).reshape(mean.shape)
    rows = [_short(x) for x in h.row_labels]
    annotate = 0 < mean.size <= ANNOTATE_MAX_CELLS
    label_room = 0.06 * max((len(c) for c in h.col_labels), default=0)  # rotated column labels, inches
    height = max(3.0, (0.34 if annotate else 0.22) * len(rows) + 1.9 + label_room)
    width = max(7.0, 2 * ((0.6 if annotate else 0.45) * len(h.col_labels) + 1.2) + 0.07 * max(map(len, rows)) + 1.5)
    fig, (ax, ax_ci) = plt.subplots(
        1, 2, figsize=(width, height), sharey=True, gridspec_kw={"width_ratios": [1.0, 1.0]}
    )
    finite = mean[np.isfinite(mean)]
    vmax = max(1.0, float(finite.max())) if finite.size else 1.0
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    cmap = h.cmap if h.interpretable else "Greys"
    im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label="normalized effect (mean)")
    finite_half = half[np.isfinite(half)]
    im_ci = ax_ci.imshow(
        np.ma.masked_invalid(half),
        cmap="Oranges" if h.interpretable else "Greys",
        aspect="auto",
        vmin=0.0,
        vmax=max(0.05, float(finite_half.max())) if finite_half.size else 1.0,
    )
    fig.colorbar(im_ci, ax=ax_ci, label="95% interval half-width")
    for a in (ax, ax_ci):
        a.set_xticks(range(len(h.col_labels)), labels=h.col_labels, fontsize=7, rotation=45, ha="right")
        a.set_xlabel(h.xlabel)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=7)
    ax.set_ylabel(h.ylabel)
    if annotate:  # mean ± half-width on the left, n on the right
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                if not np.isfinite(mean[i, j]):
                    continue
                text = f"{mean[i, j]:.2f}" + (f"\n±{half[i, j]:.2f}" if np.isfinite(half[i, j]) else "")
                dark = (mean[i, j] - vmin) / (vmax - vmin or 1.0) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
                ax_ci.text(j, i, f"n={h.cells[i][j].n}", ha="center", va="center", fontsize=5.5)
    if not h.interpretable:
        ax.text(
            0.5,
            0.5,
            "not interpretable:\nno pair destroyed",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            color="darkred",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "darkred"},
        )
    fig.suptitle(f"{h.title}\n{n_note(h)}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def heatmaps_csv(maps: Sequence[Heatmap]) -> str:
    """heatmaps.csv text: one row per cell of every map (mean, 95% interval lo/hi, n; empty when NaN)."""

    def fmt(x: float) -> str:
        return "" if math.isnan(x) else repr(round(x, 6))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for h in maps:
        for label, row in zip(h.row_labels, h.cells):
            for col, c in zip(h.col_labels, row):
                writer.writerow(
                    [h.name, label, col, fmt(c.mean), fmt(c.lo), fmt(c.hi), c.n]
                    + [int(h.interpretable), h.destroyed, h.pairs]
                )
    return buffer.getvalue()


def draw_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw every heatmap of the run in `run_dir` into `out` (default RUNDIR/report) and write its
    heatmaps.csv there (every cell's mean, interval and n); returns the PNG paths, then heatmaps.csv's."""
    maps = heatmaps(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / "report"
    written = [draw_heatmap(h, target / f"{h.name}.png") for h in maps]
    table = target / "heatmaps.csv"
    with atomic_path(table) as tmp:
        tmp.write_text(heatmaps_csv(maps))
    return [*written, table]
