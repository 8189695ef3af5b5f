"""Attention heatmaps (target pieces down the rows, source pieces along the columns) as PNG files
and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class AttentionMap:
    """Weights (T, S) of one sentence with the pieces labelling each axis."""

    weights: np.ndarray
    source: list[str]
    target: list[str]


@dataclass(frozen=True)
class PageEntry:
    """One sentence of the HTML page; ``png`` is its heatmap (None without attention)."""

    source: str
    translation: str
    png: bytes | None


def save_heatmaps(maps: Sequence[AttentionMap], path: Path, dpi: int = 100) -> Path:
    """Draw the maps side by side into one PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _figure(maps).savefig(path, dpi=dpi)
    return path


def heatmap_png(item: AttentionMap, dpi: int = 100) -> bytes:
    """One sentence's heatmap as PNG bytes."""
    buffer = io.BytesIO()
    _figure([item]).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def attention_page(entries: Sequence[PageEntry], title: str = "seq2attn translations") -> str:
    """A self-contained HTML page (images inlined as base64) of sentences and their heatmaps."""
    sections = []
    for number, entry in enumerate(entries, start=1):
        image = (
            f'<img alt="attention map of sentence {number}" '
            f'src="data:image/png;base64,{base64.b64encode(entry.png).decode("ascii")}">'
            if entry.png
            else "<p><em>no attention map</em></p>"
        )
        sections.append(
            f'<section id="s{number}"><h2>{number}</h2>'
            f'<p class="src">{html.escape(entry.source)}</p>'
            f'<p class="hyp">{html.escape(entry.translation)}</p>{image}</section>'
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "section{border-top:1px solid #ccc;padding:0.5em 0}"
        ".src{color:#555}.hyp{font-weight:bold}img{max-width:100%}"
        f"</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


def _figure(maps: Sequence[AttentionMap]) -> Figure:
    # a Figure without pyplot: no global figure registry and no backend switch for the caller;
    # matplotlib is imported on first drawing, not with seq2attn.inference
    from matplotlib.figure import Figure

    width = max(sum(0.35 * len(m.source) + 1.5 for m in maps), 4.0)
    height = max(max(0.35 * len(m.target) + 1.5 for m in maps), 3.0)
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, len(maps), squeeze=False)
    for ax, item in zip(axes[0], maps, strict=True):
        ax.imshow(item.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(item.source)), item.source, rotation=90, fontsize=8)
        ax.set_yticks(range(len(item.target)), item.target, fontsize=8)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
    return figure
