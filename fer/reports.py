"""Figures and files that report a model's results: the confusion matrix as PNG and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # with no display, matplotlib falls back to its Agg backend by itself
import torch


def confusion_figure(matrix: torch.Tensor, emotions: Sequence[str], title: str = "Confusion matrix",
                     predicted: Sequence[str] | None = None) -> plt.Figure:
    """Rows = true emotion (``emotions``), normalised to recall; columns = predicted emotion (``predicted``,
    default the same); each cell shows the share and the count."""
    counts = matrix.detach().cpu().to(torch.float64)
    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    predicted = list(emotions if predicted is None else predicted)
    rows, columns = len(emotions), len(predicted)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * columns, 0.8 + 0.8 * rows), dpi=100)
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(rows):
        for j in range(columns):
            ax.text(
                j, i, f"{share[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(columns), predicted, rotation=45, ha="right")
    ax.set_yticks(range(rows), emotions)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def write_confusion(matrix: torch.Tensor, emotions: Sequence[str], out_dir: Path,
                    stem: str = "confusion_matrix") -> None:
    """Write ``<stem>.png`` and ``<stem>.json`` (labels, counts, row-normalised shares) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = matrix.detach().cpu().to(torch.int64)
    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    (out_dir / f"{stem}.json").write_text(
        json.dumps(
            {"labels": list(emotions), "rows": "true", "columns": "predicted",
             "counts": counts.tolist(), "normalized": share.round(decimals=4).tolist()},
            indent=2,
        )
    )
    fig = confusion_figure(matrix, emotions)
    fig.savefig(out_dir / f"{stem}.png")
    plt.close(fig)
