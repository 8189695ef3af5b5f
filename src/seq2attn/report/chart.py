"""A bar chart of a metric per variant; curves of validation metrics over training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from seq2attn.report.runs import Run
from seq2attn.report.tables import (
    METRIC_COLUMNS,
    OPTIONAL_COLUMNS,
    Variant,
    config_columns,
    group_variants,
)


def plot(variants: Sequence[Variant], path: Path, metric: str = "test/bleu") -> Path:
    """Bar chart PNG of ``metric`` per variant, labelled ``key=value``; ± std error bars only for
    variants of 2 seeds or more, never below 0 (scores and losses are not negative)."""
    shown = [v for v in variants if metric in v.mean]
    names = labels([v.config for v in shown])
    figure = Figure(figsize=(max(4.0, 0.8 * len(shown) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(shown))
    spread = [v.std[metric] if v.runs >= 2 else 0.0 for v in shown]
    below = [min(s, max(v.mean[metric], 0.0)) for s, v in zip(spread, shown, strict=True)]
    axes.bar(
        positions,
        [v.mean[metric] for v in shown],
        yerr=[below, spread],
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
    """Each config's ``column=value`` for the columns that differ between the configs, joined by
    spaces (``attention=luong scorer=dot input feeding=true``); '-' is left out."""
    differing = [h for h in configs[0] if len({c[h] for c in configs}) > 1] if configs else []
    return [
        " ".join(f"{h}={c[h]}" for h in differing if c[h] != "-") or "all runs" for c in configs
    ]


def plot_curves(runs: Sequence[Run], path: Path, metrics: Sequence[str]) -> Path:
    """One panel per metric: its value at each validation (``Run.history``) against the step,
    one line per variant (the mean over its seeds at each step; Bahdanau solid, Luong dashed,
    no attention dotted)."""
    groups = group_variants(runs, config_columns(runs))
    names = labels([dict(key) for key in groups])
    styles = {"bahdanau": "-", "luong": "--", "none": ":"}
    colours = [f"C{i}" for i in range(10)] if len(groups) <= 10 else None
    figure = Figure(figsize=(5.0 * len(metrics), 4.5), layout="constrained")
    for panel, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), panel + 1)
        for index, ((key, members), name) in enumerate(zip(groups.items(), names, strict=True)):
            by_step: dict[float, list[float]] = {}
            for run in members:
                for entry in run.history:
                    if metric in entry:
                        by_step.setdefault(entry["step"], []).append(entry[metric])
            if by_step:
                steps = sorted(by_step)
                means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
                style = styles.get(dict(key).get("attention", ""), "-")
                colour = colours[index] if colours else matplotlib.colormaps["tab20"](index % 20)
                axes.plot(steps, means, style, marker=".", color=colour, label=name)
        header = {**METRIC_COLUMNS, **OPTIONAL_COLUMNS}.get(metric, (metric, ""))[0]
        axes.set_xlabel("optimizer step")
        axes.set_ylabel(header)
        axes.set_title(f"{header} over training (mean over seeds)")
        axes.grid(alpha=0.3)
    figure.legend(*axes.get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
