"""Image grids: rows of generated images with labels, saved as PNG (before/after comparisons)."""

from __future__ import annotations

from pathlib import Path

import torch

from locedit.io import atomic_path


def save_grid(
    rows: list[torch.Tensor],
    path: str | Path,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    scale: float = 1.0,
    title: str | None = None,
) -> Path:
    """Save images as a labelled grid.

    Args:
        rows: one (N, 3, H, W) tensor in [0, 1] per row, equal N.
        path: PNG to write (atomically).
        row_labels: one label per row (e.g. "before", "after").
        col_labels: one label per column (e.g. the prompts), wrapped.
        scale: figure size multiplier.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), rows[0].shape[0]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols * scale, 1.5 * n_rows * scale + 0.6), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_labels:
                ax.set_title(_wrap(col_labels[c]), fontsize=6)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 18) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:4])
