"""Experiment loggers: built from the config, W&B offline without a key, CSV that resumes."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from seq2attn.data.cache import atomic_write_bytes
from seq2attn.ranks import is_rank_zero

log = logging.getLogger(__name__)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, continuing an existing ``metrics.csv``.

    The stock writer deletes an existing ``metrics.csv`` when it starts, and knows only the
    columns it wrote itself. Here a new writer (a run resumed in its own folder, or the test
    phase of ``ddp_spawn`` in a fresh process) keeps the file's rows and starts from its columns.
    """

    @property
    def experiment(self) -> Any:
        path = os.path.join(self.log_dir, _ExperimentWriter.NAME_METRICS_FILE)
        kept = None
        if self._experiment is None and os.path.isfile(path):
            kept = Path(path).read_bytes()  # the new writer deletes it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Experiment logs directory .* not empty")
            writer = super().experiment
        if kept is not None:
            atomic_write_bytes(path, kept)
        fresh = isinstance(writer, _ExperimentWriter) and not writer.metrics_keys
        if fresh and os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as handle:
                writer.metrics_keys = next(csv.reader(handle), [])
        return writer


def build_loggers(nodes: DictConfig, config: dict[str, Any]) -> list[Logger]:
    """The configured loggers, each given the full composed config as hyperparameters."""
    loggers: list[Logger] = []
    for node in nodes.values():
        if node is None:
            continue
        if str(node.get("_target_", "")).endswith("WandbLogger"):
            node = wandb_settings(node)
        logger = instantiate(node)
        if isinstance(logger, WandbLogger):
            # Lightning always passes anonymous=None, which W&B answers with "The anonymous
            # setting has no effect" at every run; leaving it out changes nothing else
            logger._wandb_init.pop("anonymous", None)
        loggers.append(logger)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def wandb_settings(node: DictConfig) -> DictConfig:
    """Run W&B offline (saying how to sync later) when there is no API key or WANDB_MODE=offline."""
    offline = os.environ.get("WANDB_MODE") in {"offline", "dryrun"} or not wandb_api_key()
    if offline and not node.get("offline"):
        log.info(
            "W&B: no API key (or WANDB_MODE=offline): logging offline under %s; upload later with "
            "`wandb sync %s/wandb/offline-run-*`",
            node.save_dir,
            node.save_dir,
        )
        node = OmegaConf.merge(node, {"offline": True})  # type: ignore[assignment]
    return node


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs even when training failed, so the next run in this process starts clean."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and is_rank_zero():
            import wandb

            wandb.finish()


def wandb_api_key() -> str | None:
    """WANDB_API_KEY, or the key `wandb login` stored in ~/.netrc."""
    if key := os.environ.get("WANDB_API_KEY"):
        return key
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None
