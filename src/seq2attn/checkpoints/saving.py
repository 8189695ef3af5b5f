"""Writing checkpoints: atomic files and the self-describing payload, as Lightning hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from seq2attn.checkpoints import describe, save_checkpoint
from seq2attn.data.datamodule import attached_datamodule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through :func:`save_checkpoint`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        save_checkpoint(checkpoint, path)


class SelfDescribingCheckpoint(Callback):
    """Adds :func:`seq2attn.checkpoints.describe` to every checkpoint Lightning writes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        datamodule = attached_datamodule(trainer)
        checkpoint["seq2attn"] = describe(
            self.config, datamodule.src_tokenizer, datamodule.tgt_tokenizer
        )
