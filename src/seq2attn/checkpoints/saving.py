"""Lightning's checkpoint I/O (atomic writes, memory-mapped reads) and the checkpoints' metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from seq2attn.checkpoints import describe, save_checkpoint
from seq2attn.data.datamodule import attached_datamodule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through :func:`save_checkpoint`, and its reader, which maps
    the file into memory instead of reading it: a tensor's pages are read when it is used, so
    testing the best checkpoint after training, which restores the weights only, never reads the
    optimizer's state (twice the weights' size under Adam) into resident memory."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=True)


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
