"""Attention heatmaps (target pieces down the rows, source pieces along the columns) as PNG files,
each with its title and a colour bar from 0 to 1."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class AttentionMap:
    """Weights (T, S) of one sentence with the pieces labelling each axis, and the title drawn
    above it (the sentence, the step, the reference: whatever the caller knows)."""

    weights: np.ndarray
    source: list[str]
    target: list[str]
    title: str = ""


def save_heatmaps(maps: Sequence[AttentionMap], path: Path, dpi: int = 100) -> Path:
    """Draw the maps side by side into one PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    heatmap_figure(maps).savefig(path, dpi=dpi)
    return path


def heatmap_png(item: AttentionMap, dpi: int = 100) -> bytes:
    """One sentence's heatmap as PNG bytes."""
    buffer = io.BytesIO()
    heatmap_figure([item]).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def heatmap_figure(maps: Sequence[AttentionMap]) -> Figure:
    """The maps side by side, each with its title and a colour bar."""
    # a Figure without pyplot: no global figure registry and no backend switch for the caller;
    # matplotlib is imported on first drawing, not with seq2attn.inference
    from matplotlib.figure import Figure

    width = max(sum(0.35 * len(m.source) + 2.5 for m in maps), 5.0)
    height = max(max(0.35 * len(m.target) + 2.0 for m in maps), 3.5)
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, len(maps), squeeze=False)
    for ax, item in zip(axes[0], maps, strict=True):
        image = ax.imshow(item.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(item.source)), item.source, rotation=90, fontsize=8)
        ax.set_yticks(range(len(item.target)), item.target, fontsize=8)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        if item.title:
            ax.set_title(_wrap(item.title, width=max(30, 4 * len(item.source))), fontsize=8)
        figure.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    return figure


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width``, at most two rows per line, so a long source
    never pushes the reference or the step out."""
    return "\n".join(
        row
        for line in text.splitlines()
        for row in textwrap.wrap(line, width=width, max_lines=2, placeholder=" …")
    )
