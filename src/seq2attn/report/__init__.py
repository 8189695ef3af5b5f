"""Results tables and charts from finished runs (``python src/report.py <folder>``).

A run is a folder holding the ``config.yaml`` and ``metrics.json`` that training writes, or a
result file (``<run_name>-seed<seed>.json`` with ``config``, ``metrics``, ``commit`` and
``command``, as :func:`export` writes them for ``docs/results/``). Variants are runs whose configs
differ only in the seed; they are reported as mean ± sample standard deviation over the seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from seq2attn.report.chart import plot
from seq2attn.report.runs import RESULT_KEYS, ReportError, Run, collect_runs, export
from seq2attn.report.tables import (
    Variant,
    aggregate,
    config_columns,
    config_row,
    is_debug,
    to_markdown,
    variants_table,
    varying_keys,
)

__all__ = [
    "ReportError",
    "is_debug",
    "Run",
    "Variant",
    "aggregate",
    "collect_runs",
    "config_columns",
    "config_row",
    "export",
    "plot",
    "report",
    "to_markdown",
    "variants_table",
    "varying_keys",
    "write_section",
]

log = logging.getLogger(__name__)


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
    include_debug: bool = False,
) -> str:
    """Collect the runs below ``roots`` (folders or result files); write the Markdown (to ``out``
    or into a section of a page, see :func:`write_section`), chart and result files asked for.
    Debug runs (a fast dev run, limited batches: :func:`is_debug`) are left out, and named, unless
    ``include_debug``."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    runs, unfinished = [], []
    for root in roots:
        found, skipped = collect_runs(root)
        runs += found
        unfinished += skipped
    for folder in unfinished:
        log.warning("skipping unfinished run %s (no metrics.json)", folder)
    debug = [] if include_debug else [run for run in runs if is_debug(run)]
    if debug:
        log.warning("left out %d debug run(s): %s", len(debug), ", ".join(r.name for r in debug))
        runs = [run for run in runs if run not in debug]
    if not runs:
        raise ReportError(
            f"{', '.join(map(str, roots))}: no finished runs (folders with config.yaml and "
            f"metrics.json, or result JSON files with {' and '.join(RESULT_KEYS)}); "
            f"{len(unfinished)} unfinished"
        )
    markdown = to_markdown(runs, unfinished, debug)
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
