"""Self-describing checkpoints: the run's config and tokenizers travel with the weights."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from seq2attn.data.tokenizer import Tokenizer
from seq2attn.module import attached_datamodule

CHECKPOINT_FORMAT = "seq2attn-checkpoint"
CHECKPOINT_VERSION = 1


def describe(config: dict[str, Any], src: Tokenizer, tgt: Tokenizer) -> dict[str, Any]:
    """Metadata stored under ``checkpoint["seq2attn"]``; plain types, so weights-only loadable."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "src_spm": src.proto,
        "tgt_spm": tgt.proto,
    }


class SelfDescribingCheckpoint(Callback):
    """Adds :func:`describe` to every checkpoint Lightning writes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        datamodule = attached_datamodule(trainer)
        checkpoint["seq2attn"] = describe(
            self.config, datamodule.src_tokenizer, datamodule.tgt_tokenizer
        )
