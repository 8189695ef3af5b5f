"""Writing checkpoints: atomic files and the self-describing payload, as Lightning hooks."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from seq2attn.checkpoints import describe
from seq2attn.data.cache import atomic_write_bytes
from seq2attn.module import attached_datamodule


def save_checkpoint(contents: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint to a temporary file beside ``path``, then rename it into place, so a
    process killed during a save leaves the previous checkpoint intact."""
    buffer = io.BytesIO()
    torch.save(contents, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


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
