"""Attention heatmaps: target pieces down the rows, source pieces along the columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class AttentionMap:
    """Weights (T, S) of one sentence with the pieces labelling each axis."""

    weights: np.ndarray
    source: list[str]
    target: list[str]


def save_heatmaps(maps: Sequence[AttentionMap], path: Path, dpi: int = 100) -> Path:
    """Draw the maps side by side into one PNG at ``path``."""
    figure, axes = plt.subplots(
        1,
        len(maps),
        figsize=tuple(_figure_size(maps)),
        squeeze=False,
        layout="constrained",
    )
    for ax, item in zip(axes[0], maps, strict=True):
        _draw(ax, item)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def _figure_size(maps: Sequence[AttentionMap]) -> tuple[float, float]:
    width = sum(0.35 * len(m.source) + 1.5 for m in maps)
    height = max(0.35 * len(m.target) + 1.5 for m in maps)
    return max(width, 4.0), max(height, 3.0)


def _draw(ax: plt.Axes, item: AttentionMap) -> None:
    ax.imshow(item.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(item.source)), item.source, rotation=90, fontsize=8)
    ax.set_yticks(range(len(item.target)), item.target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
