"""Results tables and charts from finished runs (``python src/report.py <folder>``).

A run is a folder holding the ``config.yaml`` and ``metrics.json`` that training writes, or a
result file (``<run_name>-seed<seed>.json`` with ``config``, ``metrics``, ``commit`` and
``command``, as :func:`export` writes them for ``docs/results/``). Variants are runs whose configs
differ only in the seed; they are reported as mean ± sample standard deviation over the seeds.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# header -> flattened config key; always shown
CONFIG_COLUMNS = {
    "attention": "attention.type",
    "scorer": "scorer._target_",
    "cell": "cell.type",
    "teacher forcing": "teacher_forcing._target_",
    "input feeding": "attention.input_feeding",
    "reverse source": "model.reverse_source",
    "seed": "seed",
}
# metrics.json key -> (header, format)
METRIC_COLUMNS = {
    "val/bleu_best": ("val BLEU", ".2f"),
    "test/bleu": ("test BLEU", ".2f"),
    "test/chrf": ("test chrF", ".2f"),
    "val/ppl": ("val ppl", ".2f"),
    "params": ("params", ",.0f"),
    "time/wall_s": ("wall s", ".1f"),
    "train/tok_s": ("tok/s", ",.0f"),
}
# Keys that differ between runs without being a choice: paths (the corpus folder too: the same
# files reached by another path), names derived from the choices, and copies of other keys made by
# interpolation (model.cell = cell.type, data.seed = seed).
# Values inside a run's own output folder (checkpoint dirs, logger dirs) are skipped as well.
BOOKKEEPING = (
    "paths",
    "run_name",
    "task_name",
    "ckpt_path",
    "logger",
    "data.cache_dir",
    "data.root",
    "data.corpus.root",
    "data.seed",
    "model.cell",
    "model.attention",
    "model.input_feeding",
    "model.scorer",
)
RESULT_KEYS = ("config", "metrics")


class ReportError(ValueError):
    """A folder with nothing to report, or a result file that cannot be read."""


@dataclass(frozen=True)
class Run:
    """One finished run: its name, resolved config and final metrics."""

    name: str
    config: dict[str, Any]
    metrics: dict[str, float]
    commit: str | None = None
    # the command line that trained it, when known
    command: str | None = None


@dataclass(frozen=True)
class Variant:
    """Runs with equal config columns apart from the seed, and their metric statistics."""

    config: dict[str, str]
    runs: int
    mean: dict[str, float]
    std: dict[str, float]


def collect_runs(root: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs below ``root`` (run folders and result files) and the unfinished folders;
    ``root`` may also be a single result file.

    Runs are sorted by name, numbers in names compared as numbers (multirun job 2 before 10).
    """
    if root.is_file():
        run = _read_result_file(root, root.stem)
        if run is None:
            raise ReportError(f"{root}: not a result file (needs {' and '.join(RESULT_KEYS)})")
        return [run], []
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder or result file")
    folders = {p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra"}
    runs, unfinished = [], []
    for folder in folders:
        if (folder / "metrics.json").is_file():
            runs.append(_read_run_folder(folder, _relative_name(folder, root)))
        else:
            unfinished.append(folder)
    for path in root.rglob("*.json"):
        if not any(parent in folders for parent in path.parents):
            run = _read_result_file(path, _relative_name(path.with_suffix(""), root))
            if run is not None:
                runs.append(run)
    return sorted(runs, key=lambda r: _natural(r.name)), sorted(unfinished)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (``{"model": {"dropout": 0.2}}`` -> ``model.dropout``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def varying_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted keys whose value differs between the configs that have them, in config order.

    A key only some configs have (``scorer.hidden_size`` of the additive scorer) counts only if
    its values differ; bookkeeping keys (paths, derived names, interpolated copies) and paths
    inside the run's ``paths.output_dir`` never count.
    """
    values: dict[str, set[str]] = {}
    for config in configs:
        flat = flatten(config)
        output_dir = flat.get("paths.output_dir")
        for key, value in flat.items():
            if not (output_dir and isinstance(value, str) and value.startswith(output_dir)):
                values.setdefault(key, set()).add(repr(value))
    return [key for key, seen in values.items() if len(seen) > 1 and not _bookkeeping(key)]


def config_columns(runs: Sequence[Run]) -> dict[str, str]:
    """Header -> config key: the fixed columns, then every other key that varies."""
    fixed = set(CONFIG_COLUMNS.values())
    extra = [k for k in varying_keys([r.config for r in runs]) if k not in fixed]
    return {**CONFIG_COLUMNS, **{key: key for key in extra}}


def config_row(run: Run, columns: dict[str, str]) -> dict[str, str]:
    """The run's config values as table cells (option names, not class paths)."""
    flat = flatten(run.config)
    row = {header: _cell(key, flat.get(key)) for header, key in columns.items()}
    if flat.get("attention.type") == "none" and "scorer" in row:
        row["scorer"] = "-"  # the wiring without attention ignores the scorer group
    elif flat.get("scorer.scale") is True and "scorer" in row:
        row["scorer"] = f"scaled_{row['scorer']}"  # general / sqrt(d): scorer=scaled_general
    return row


def aggregate(runs: Sequence[Run], columns: dict[str, str]) -> list[Variant]:
    """Group runs by their config columns except ``seed``; mean and sample std of each metric.

    The std of a single run is 0. Variants are sorted by mean test BLEU, best first.
    """
    groups: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for run in runs:
        row = config_row(run, columns)
        row.pop("seed", None)
        groups.setdefault(tuple(row.items()), []).append(run)
    variants = []
    for key, members in groups.items():
        mean, std = {}, {}
        for metric in METRIC_COLUMNS:
            values = [r.metrics[metric] for r in members if _finite(r.metrics.get(metric))]
            if values:
                mean[metric] = statistics.fmean(values)
                std[metric] = statistics.stdev(values) if len(values) > 1 else 0.0
        variants.append(Variant(dict(key), len(members), mean, std))
    return sorted(variants, key=lambda v: -v.mean.get("test/bleu", -math.inf))


def to_markdown(runs: Sequence[Run], unfinished: Sequence[Path] = ()) -> str:
    """A runs table; a variants table (mean ± std) when some variant has several seeds."""
    columns = config_columns(runs)
    metric_headers = [header for header, _ in METRIC_COLUMNS.values()]
    commands = any(run.command for run in runs)
    run_rows = [
        [
            run.name,
            *config_row(run, columns).values(),
            *(_number(run.metrics.get(key), spec) for key, (_, spec) in METRIC_COLUMNS.items()),
            *([f"`{run.command}`" if run.command else "-"] if commands else []),
        ]
        for run in runs
    ]
    headers = ["run", *columns, *metric_headers, *(["command"] if commands else [])]
    parts = [f"## Runs ({len(runs)})", _table(headers, run_rows)]
    variants = aggregate(runs, columns)
    if any(v.runs > 1 for v in variants):
        parts += [f"## Variants ({len(variants)}; mean ± std over seeds)", variants_table(runs)]
    if unfinished:
        listed = ", ".join(str(p) for p in unfinished)
        parts.append(f"Skipped {len(unfinished)} unfinished run(s) without metrics.json: {listed}")
    return "\n\n".join(parts) + "\n"


def variants_table(runs: Sequence[Run]) -> str:
    """The Markdown table of the runs' variants: config columns, seeds, metric mean ± std."""
    columns = config_columns(runs)
    headers = [h for h in columns if h != "seed"]
    rows = [
        [
            *v.config.values(),
            str(v.runs),
            *(_mean_std(v, key, spec) for key, (_, spec) in METRIC_COLUMNS.items()),
        ]
        for v in aggregate(runs, columns)
    ]
    metric_headers = [header for header, _ in METRIC_COLUMNS.values()]
    return _table([*headers, "seeds", *metric_headers], rows)


def plot(variants: Sequence[Variant], path: Path, metric: str = "test/bleu") -> Path:
    """Bar chart PNG of ``metric`` per variant, with ± std error bars where seeds were repeated."""
    shown = [v for v in variants if metric in v.mean]
    labels = _labels([v.config for v in shown])
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
    axes.set_xticks(list(positions), labels, rotation=30, ha="right")
    seeds = sorted({v.runs for v in shown})
    axes.set_ylabel(METRIC_COLUMNS.get(metric, (metric, ""))[0])
    axes.set_title(f"{metric} per variant (runs per variant: {', '.join(map(str, seeds))})")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def export(runs: Sequence[Run], folder: Path) -> list[Path]:
    """Write one ``<run_name>-seed<seed>.json`` per run (config, metrics, commit, command), no
    checkpoints.

    A file already holding the same result is kept; a different run that would share its name
    (here or in an earlier export) gets ``-2``, ``-3``, ... appended: nothing is overwritten.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for run in runs:
        stem = f"{run.config.get('run_name', run.name)}-seed{run.config.get('seed')}"
        payload = {
            "config": run.config,
            "metrics": run.metrics,
            "commit": run.commit,
            "command": run.command,
        }
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        path, copy = folder / f"{stem}.json", 1
        while path in written or (path.exists() and path.read_text() != text):
            copy += 1
            path = folder / f"{stem}-{copy}.json"
        path.write_text(text)
        written.append(path)
    return written


def write_section(markdown: str, path: Path, section: str) -> None:
    """Replace the text between ``<!-- report:<section> -->`` and ``<!-- /report:<section> -->``
    in ``path`` (a hand-written page keeps its prose; the generated tables are refreshed)."""
    begin, end = f"<!-- report:{section} -->", f"<!-- /report:{section} -->"
    text = path.read_text() if path.is_file() else ""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ReportError(f"{path}: needs one '{begin}' line followed by one '{end}' line")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    path.write_text(f"{head}{begin}\n{markdown}{end}{tail}")


def report(
    roots: Path | Sequence[Path],
    out: Path | None = None,
    chart: Path | None = None,
    export_dir: Path | None = None,
    into: tuple[Path, str] | None = None,
) -> str:
    """Collect the runs below ``roots`` (folders or result files); write the Markdown (to ``out``
    or into a section of a page, see :func:`write_section`), chart and result files asked for."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    runs, unfinished = [], []
    for root in roots:
        found, skipped = collect_runs(root)
        runs += found
        unfinished += skipped
    for folder in unfinished:
        log.warning("skipping unfinished run %s (no metrics.json)", folder)
    if not runs:
        raise ReportError(
            f"{', '.join(map(str, roots))}: no finished runs (folders with config.yaml and "
            f"metrics.json, or result JSON files with {' and '.join(RESULT_KEYS)}); "
            f"{len(unfinished)} unfinished"
        )
    markdown = to_markdown(runs, unfinished)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
    if into is not None:
        write_section(markdown, *into)
    if chart is not None:
        plot(aggregate(runs, config_columns(runs)), chart)
    if export_dir is not None:
        log.info("wrote %d result files to %s", len(export(runs, export_dir)), export_dir)
    return markdown


def _read_run_folder(folder: Path, name: str) -> Run:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    record = _read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    if not {"val/bleu_best", "params"} <= metrics.keys():
        metrics = {**_checkpoint_metrics(folder, metrics), **metrics}
    if "time/wall_s" not in metrics and (folder / "run.json").is_file():
        # run.json is written before the data are prepared, metrics.json after the test
        started = (folder / "run.json").stat().st_mtime
        metrics["time/wall_s"] = (folder / "metrics.json").stat().st_mtime - started
    argv = record.get("argv")
    command = "python " + shlex.join(argv) if argv else None
    return Run(name, config, metrics, record.get("git", {}).get("commit"), command)


def _checkpoint_metrics(folder: Path, metrics: dict[str, float]) -> dict[str, float]:
    """Best val BLEU and parameter count from the best checkpoint, for runs that did not log
    them (older runs); falls back to the final val BLEU."""
    # imported here: it loads Lightning (seconds), which only runs without these metrics need
    from seq2attn.checkpoint import MODEL_PREFIX, CheckpointError, read_checkpoint

    derived = {"val/bleu_best": metrics["val/bleu"]} if "val/bleu" in metrics else {}
    try:
        checkpoint = read_checkpoint(folder)
    except CheckpointError as error:
        log.warning("%s: no parameter count (%s)", folder, error)
        return derived
    state = checkpoint["state_dict"]
    derived["params"] = float(
        sum(v.numel() for k, v in state.items() if k.startswith(MODEL_PREFIX))
    )
    for state in checkpoint.get("callbacks", {}).values():
        if state.get("monitor") == "val/bleu" and state.get("best_model_score") is not None:
            derived["val/bleu_best"] = float(state["best_model_score"])
    return derived


def _read_result_file(path: Path, name: str) -> Run | None:
    """A result file as a run; None for JSON files that are not result files."""
    payload = _read_json(path)
    if not all(isinstance(payload.get(key), dict) for key in RESULT_KEYS):
        return None
    return Run(
        name, payload["config"], payload["metrics"], payload.get("commit"), payload.get("command")
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: cannot read JSON ({error})") from error
    return payload if isinstance(payload, dict) else {}


def _relative_name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path != root else path.name


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _bookkeeping(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in BOOKKEEPING)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key.endswith("._target_"):
        return _option_name(str(value))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _option_name(target: str) -> str:
    """``seq2attn.models.scorers.ScaledDotScorer`` -> ``scaled_dot`` (class = option + role)."""
    name = re.sub(r"(Scorer|Schedule)$", "", target.rsplit(".", 1)[-1])
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else "-"


def _mean_std(variant: Variant, key: str, spec: str) -> str:
    if key not in variant.mean:
        return "-"
    if variant.runs == 1 or variant.std[key] == 0:  # e.g. the parameter count
        return format(variant.mean[key], spec)
    return f"{variant.mean[key]:{spec}} ± {variant.std[key]:{spec}}"


def _labels(configs: Sequence[dict[str, str]]) -> list[str]:
    """Each config's values of the columns that differ between the configs, joined by spaces; a
    yes/no column reads as its name (``input feeding``, ``no input feeding``), '-' is left out."""
    differing = [h for h in configs[0] if len({c[h] for c in configs}) > 1] if configs else []
    named = {"true": "{}", "false": "no {}", "-": ""}
    return [
        " ".join(p for h in differing if (p := named.get(c[h], c[h]).format(h))) or "all runs"
        for c in configs
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(_escape(c) for c in line) + " |" for line in lines)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")
