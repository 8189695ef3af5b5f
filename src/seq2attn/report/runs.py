"""Finished runs: run folders (``config.yaml``, ``metrics.json``, ``run.json``) as training writes
them, and result files (``<run_name>-seed<seed>.json`` with ``config``, ``metrics``, ``commit`` and
``command``) as :func:`export` writes them for ``docs/results/``."""

from __future__ import annotations

import csv
import json
import logging
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

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
    # one entry per validation: the global step and the val/ metrics logged there
    history: tuple[dict[str, float], ...] = ()


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
            try:
                runs.append(_read_run_folder(folder, _relative_name(folder, root)))
            except (OSError, ValueError, yaml.YAMLError) as error:  # JSON errors are ValueErrors
                log.warning("skipped %s: its run files cannot be read (%s)", folder, error)
        else:
            unfinished.append(folder)
    for path in root.rglob("*.json"):
        if not any(parent in folders for parent in path.parents):
            run = _read_result_file(path, _relative_name(path.with_suffix(""), root))
            if run is not None:
                runs.append(run)
    return sorted(runs, key=lambda r: _natural(r.name)), sorted(unfinished)


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
            **({"history": list(run.history)} if run.history else {}),
        }
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        path, copy = folder / f"{stem}.json", 1
        while path in written or (path.exists() and path.read_text() != text):
            copy += 1
            path = folder / f"{stem}-{copy}.json"
        path.write_text(text)
        written.append(path)
    return written


def _read_run_folder(folder: Path, name: str) -> Run:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    record = _read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    argv = record.get("argv")
    command = "python " + shlex.join(argv) if argv else None
    commit = record.get("git", {}).get("commit")
    return Run(name, config, metrics, commit, command, validation_history(folder))


def validation_history(folder: Path) -> tuple[dict[str, float], ...]:
    """The val/ metrics of each validation of a run folder, from the CSV logger's
    ``csv/metrics.csv`` (one row per logging call, blank where a row did not log a key), with
    ``step``, the optimizer steps done when it ran (the logger's 0-based batch index + 1);
    empty without that file."""
    path = folder / "csv" / "metrics.csv"
    if not path.is_file():
        return ()
    by_step: dict[int, dict[str, float]] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
            if values:
                step = int(row["step"]) + 1
                by_step.setdefault(step, {"step": step}).update(values)
    return tuple(by_step[step] for step in sorted(by_step))


def _read_result_file(path: Path, name: str) -> Run | None:
    """A result file as a run; None for JSON files that are not result files."""
    payload = _read_json(path)
    if not all(isinstance(payload.get(key), dict) for key in RESULT_KEYS):
        return None
    return Run(
        name,
        payload["config"],
        payload["metrics"],
        payload.get("commit"),
        payload.get("command"),
        tuple(payload.get("history", ())),
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
