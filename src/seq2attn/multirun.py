"""The end of a multirun (``src/train.py -m``): where its jobs' run folders are, how many
finished, and the command that tabulates them."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class MultirunSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        log.info("%s", summary_line(Path(str(config.hydra.sweep.dir))))


def summary_line(folder: Path) -> str:
    """``multirun done: 3 of 4 jobs finished in <folder>; tabulate them: python src/report.py
    <folder>`` (a job has finished when its folder holds ``metrics.json``)."""
    jobs = [p for p in folder.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    finished = sum((job / "metrics.json").is_file() for job in jobs)
    shown, chart = shlex.quote(str(folder)), shlex.quote(str(folder / "report.png"))
    return (
        f"multirun done: {finished} of {len(jobs)} jobs finished in {folder}; "
        f"tabulate them: python src/report.py {shown} --chart {chart}"
    )
