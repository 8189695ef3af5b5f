"""A bar chart of a metric per variant."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from seq2attn.report.tables import METRIC_COLUMNS, Variant


def plot(variants: Sequence[Variant], path: Path, metric: str = "test/bleu") -> Path:
    """Bar chart PNG of ``metric`` per variant, with ± std error bars where seeds were repeated."""
    shown = [v for v in variants if metric in v.mean]
    names = labels([v.config for v in shown])
    figure = Figure(figsize=(max(4.0, 0.8 * len(shown) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(shown))
    axes.bar(
        positions,
        [v.mean[metric] for v in shown],
        yerr=[v.std[metric] for v in shown],
        capsize=4,
        color="tab:blue",
    )
    axes.set_xticks(list(positions), names, rotation=30, ha="right")
    seeds = sorted({v.runs for v in shown})
    axes.set_ylabel(METRIC_COLUMNS.get(metric, (metric, ""))[0])
    axes.set_title(f"{metric} per variant (runs per variant: {', '.join(map(str, seeds))})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def labels(configs: Sequence[dict[str, str]]) -> list[str]:
    """Each config's values of the columns that differ between the configs, joined by spaces; a
    yes/no column reads as its name (``input feeding``, ``no input feeding``), '-' is left out."""
    differing = [h for h in configs[0] if len({c[h] for c in configs}) > 1] if configs else []
    named = {"true": "{}", "false": "no {}", "-": ""}
    return [
        " ".join(p for h in differing if (p := named.get(c[h], c[h]).format(h))) or "all runs"
        for c in configs
    ]
