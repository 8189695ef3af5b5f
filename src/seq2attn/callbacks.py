"""Training callbacks that are part of every run."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class TokenThroughput(Callback):
    """Logs ``train/tok_s``: target tokens (pieces + EOS) per second of training step time."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        tokens = batch.num_target_tokens * trainer.world_size
        pl_module.log("train/tok_s", tokens / max(elapsed, 1e-9), prog_bar=True, batch_size=1)
