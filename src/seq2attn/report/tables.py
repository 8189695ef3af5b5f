"""Tables of runs: config columns (option names), metric columns, seed aggregation, Markdown."""

from __future__ import annotations

import functools
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seq2attn.report.runs import Run

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the option files: option names
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
# shown when some run of the table has them: attention read as alignment (teacher-forced pass)
# and exposure bias
OPTIONAL_COLUMNS = {
    "val/aer": ("val AER", ".3f"),
    "val/attention_entropy": ("val entropy", ".2f"),
    # the loss of the decoder fed its own argmax, and its excess over val/loss
    "val/free_running_loss": ("val free-running loss", ".3f"),
    "val/exposure_gap": ("val exposure gap", ".3f"),
}


def metric_columns(runs: Sequence[Run]) -> dict[str, tuple[str, str]]:
    """metrics.json key -> (header, format): every METRIC_COLUMNS key, then the
    OPTIONAL_COLUMNS keys that some run has."""
    present = {key for run in runs for key in run.metrics}
    return METRIC_COLUMNS | {k: v for k, v in OPTIONAL_COLUMNS.items() if k in present}


# Keys that differ between runs without being a choice: paths (the corpus folder too: the same
# files reached by another path), names derived from the choices, copies of other keys made by
# interpolation (model.cell = cell.type, data.seed = seed), and what the console shows.
# Values inside a run's own output folder (checkpoint dirs, logger dirs) are skipped as well.
BOOKKEEPING = (
    "paths",
    "run_name",
    "name_suffix",
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
    "trainer.enable_model_summary",
    "trainer.enable_progress_bar",
)


# keys whose absence from a run's config is a value of its own: a run with a fast dev run, a
# step or time budget or another corpus never joins the variant of one without
BUDGET = (
    "trainer.fast_dev_run",
    "trainer.overfit_batches",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "data.corpus._target_",
)


@dataclass(frozen=True)
class Variant:
    """Runs with equal config columns apart from the seed, and their metric statistics."""

    config: dict[str, str]
    runs: int
    mean: dict[str, float]
    std: dict[str, float]


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
    its values differ, unless it is a budget key (``trainer.fast_dev_run``, ``max_steps``, the
    corpus, ...: BUDGET): then lacking it differs from setting it. Bookkeeping keys (paths,
    derived names, interpolated copies) and paths inside the run's ``paths.output_dir`` never
    count.
    """
    values: dict[str, set[str]] = {}
    flats = [flatten(config) for config in configs]
    for flat in flats:
        output_dir = flat.get("paths.output_dir")
        for key, value in flat.items():
            if not (output_dir and isinstance(value, str) and value.startswith(output_dir)):
                values.setdefault(key, set()).add(repr(value))
    for key, seen in values.items():  # a run without the key: its option's default, if any
        for flat in flats:
            if key in flat:
                continue
            if key in BUDGET:
                seen.add("unset")
            elif (default := option_default(key, flat)) is not None:
                seen.add(repr(default))
    return [
        key
        for key, seen in values.items()
        if len(seen) > 1 and not _bookkeeping(key) and not _named_by_option(key, flats)
    ]


def _named_by_option(key: str, flats: Sequence[dict[str, Any]]) -> bool:
    """True when every run has the default of its group's option for ``key`` (``scorer.scale``
    of ``general`` and ``scaled_general``): the option's column already tells it."""
    if key.endswith("._target_"):  # the option itself
        return False
    for flat in flats:
        default = option_default(key, flat)
        if key not in flat and default is None:
            continue  # neither the run nor its option has the key
        if default is None or flat.get(key, default) != default:
            return False
    return True


def config_columns(runs: Sequence[Run]) -> dict[str, str]:
    """Header -> config key: the fixed columns, then every other key that varies."""
    fixed = set(CONFIG_COLUMNS.values())
    extra = [k for k in varying_keys([r.config for r in runs]) if k not in fixed]
    return {**CONFIG_COLUMNS, **{key: key for key in extra}}


def option_default(key: str, flat: dict[str, Any]) -> Any:
    """The value a run made before ``key`` existed had: the default that key has today in the
    ``conf/`` option its group was composed from (``scorer.scale_init`` of ``general``: false);
    None where no option file sets it."""
    group, _, name = key.partition(".")
    if not name or not (CONF_DIR / group).is_dir():
        return None
    node = {k.removeprefix(f"{group}."): v for k, v in flat.items() if k.startswith(f"{group}.")}
    if "_target_" not in node:
        return None
    return _options(group).get(option_name(group, node), {}).get(name)


def config_row(run: Run, columns: dict[str, str]) -> dict[str, str]:
    """The run's config values as table cells (option names, not class paths); a key the run
    lacks shows its option's default (:func:`option_default`)."""
    flat = flatten(run.config)
    for key in columns.values():
        if (
            key not in flat
            and key not in BUDGET
            and (default := option_default(key, flat)) is not None
        ):
            flat[key] = default
    row = {header: _cell(key, flat) for header, key in columns.items()}
    if flat.get("attention.type") == "none" and "scorer" in row:
        row["scorer"] = "-"  # the wiring without attention ignores the scorer group
    return row


def option_name(group: str, node: dict[str, Any]) -> str:
    """The ``conf/<group>`` option a run's ``group`` node (flattened) was composed from.

    Of the options whose ``_target_`` names the node's class (by class name, so results written
    before a module was moved still match), the one whose values the node contradicts least
    (``scorer.scale=true`` is ``scaled_general``); ties go to the name the class gives, its
    CapWords without the role suffix (``ScaledDotScorer`` -> ``scaled_dot``), which is also the
    answer when ``conf/`` has no such option.
    """
    target = str(node.get("_target_"))
    from_class = re.sub(r"[A-Z][a-z0-9]*$", "", target.rsplit(".", 1)[-1])
    from_class = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", from_class).lower()
    candidates = [
        (sum(key in node and node[key] != value for key, value in values.items()), name)
        for name, values in _options(group).items()
        if str(values.get("_target_")).rsplit(".", 1)[-1] == target.rsplit(".", 1)[-1]
    ]
    return (
        min(candidates, key=lambda c: (c[0], c[1] != from_class, c[1]))[1]
        if candidates
        else from_class
    )


@functools.cache
def _options(group: str) -> dict[str, dict[str, Any]]:
    """Option name -> its literal values, flattened, for each ``conf/<group>/*.yaml``."""
    options = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        values.pop("defaults", None)
        flat = flatten(values)
        options[path.stem] = {k: v for k, v in flat.items() if "${" not in str(v)}
    return options


def group_variants(
    runs: Sequence[Run], columns: dict[str, str]
) -> dict[tuple[tuple[str, str], ...], list[Run]]:
    """The runs of each variant (equal config columns apart from ``seed``), keyed by its
    (header, cell) pairs, in order of first appearance."""
    groups: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for run in runs:
        row = config_row(run, columns)
        row.pop("seed", None)
        groups.setdefault(tuple(row.items()), []).append(run)
    return groups


def aggregate(runs: Sequence[Run], columns: dict[str, str]) -> list[Variant]:
    """Group runs by their config columns except ``seed``; mean and sample std of each metric.

    The std of a single run is 0. Variants are sorted by mean test BLEU, best first.
    """
    variants = []
    for key, members in group_variants(runs, columns).items():
        mean, std = {}, {}
        for metric in METRIC_COLUMNS | OPTIONAL_COLUMNS:
            values = [r.metrics[metric] for r in members if _finite(r.metrics.get(metric))]
            if values:
                mean[metric] = statistics.fmean(values)
                std[metric] = statistics.stdev(values) if len(values) > 1 else 0.0
        variants.append(Variant(dict(key), len(members), mean, std))
    return sorted(variants, key=lambda v: -v.mean.get("test/bleu", -math.inf))


def is_debug(run: Run) -> bool:
    """A fast dev run or a run on limited batches (``debug=fdr``, ``debug=limit``): its scores
    are not results."""
    trainer = run.config.get("trainer") or {}
    limits = [trainer.get(f"limit_{split}_batches") for split in ("train", "val", "test")]
    return bool(trainer.get("fast_dev_run")) or any(
        limit is not None and limit != 1.0 for limit in limits
    )


def to_markdown(
    runs: Sequence[Run], unfinished: Sequence[Path] = (), debug: Sequence[Run] = ()
) -> str:
    """A runs table; a variants table (mean ± std) when some variant has several seeds; a note
    naming the unfinished runs and the debug runs left out."""
    columns = config_columns(runs)
    metrics = metric_columns(runs)
    metric_headers = [header for header, _ in metrics.values()]
    commands = any(run.command for run in runs)
    run_rows = [
        [
            run.name,
            *config_row(run, columns).values(),
            *(_number(run.metrics.get(key), spec) for key, (_, spec) in metrics.items()),
            *([f"`{run.command}`" if run.command else "-"] if commands else []),
        ]
        for run in runs
    ]
    headers = ["run", *columns, *metric_headers, *(["command"] if commands else [])]
    parts = [f"## Runs ({len(runs)})", markdown_table(headers, run_rows)]
    variants = aggregate(runs, columns)
    if any(v.runs > 1 for v in variants):
        parts += [f"## Variants ({len(variants)}; mean ± std over seeds)", variants_table(runs)]
    if unfinished:
        listed = ", ".join(str(p) for p in unfinished)
        parts.append(f"Skipped {len(unfinished)} unfinished run(s) without metrics.json: {listed}")
    if debug:
        listed = ", ".join(run.name for run in debug)
        parts.append(
            f"Left out {len(debug)} debug run(s) (a fast dev run or limited batches; "
            f"`--include-debug` keeps them): {listed}"
        )
    return "\n\n".join(parts) + "\n"


def variants_table(runs: Sequence[Run]) -> str:
    """The Markdown table of the runs' variants: config columns, seeds, metric mean ± std."""
    columns = config_columns(runs)
    metrics = metric_columns(runs)
    headers = [h for h in columns if h != "seed"]
    rows = [
        [
            *v.config.values(),
            str(v.runs),
            *(_mean_std(v, key, spec) for key, (_, spec) in metrics.items()),
        ]
        for v in aggregate(runs, columns)
    ]
    metric_headers = [header for header, _ in metrics.values()]
    return markdown_table([*headers, "seeds", *metric_headers], rows)


def _bookkeeping(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in BOOKKEEPING)


def _cell(key: str, flat: dict[str, Any]) -> str:
    value = flat.get(key)
    if value is None:
        return "-"
    if key.endswith("._target_"):
        group = key.removesuffix("._target_")
        prefix = f"{group}."
        return option_name(
            group, {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
        )
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; a `|` inside a cell is escaped."""
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(_escape(c) for c in line) + " |" for line in lines)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")
