"""Loggers with fixes the stock ones need for resumed and multi-process runs."""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, continuing an existing ``metrics.csv``.

    The stock writer only knows the columns it wrote itself, so a new writer appending to an
    existing file (a resumed run, or the test phase of ``ddp_spawn`` in a fresh process) fails
    when it rewrites the header. Here a new writer starts from the file's columns.
    """

    @property
    def experiment(self) -> Any:
        writer = super().experiment
        if (
            isinstance(writer, _ExperimentWriter)
            and not writer.metrics_keys
            and os.path.isfile(writer.metrics_file_path)
        ):
            with open(writer.metrics_file_path, newline="") as handle:
                writer.metrics_keys = sorted(next(csv.reader(handle), []))
        return writer
