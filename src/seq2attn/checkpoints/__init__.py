"""Self-describing checkpoints: the run's config and tokenizers travel with the weights.

Writing (the Lightning hooks, atomic files) lives in :mod:`seq2attn.checkpoints.saving`; reading
(format check, run-folder resolution, loading, ensembles) in :mod:`seq2attn.checkpoints.loading`
and averaging in :mod:`seq2attn.checkpoints.averaging`. Reading never imports Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seq2attn.data.cache import atomic_write
from seq2attn.data.tokenizer import Tokenizer

CHECKPOINT_FORMAT = "seq2attn-checkpoint"
CHECKPOINT_VERSION = 1
MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, foreign or incomplete."""


def describe(config: dict[str, Any], src: Tokenizer, tgt: Tokenizer) -> dict[str, Any]:
    """Metadata stored under ``checkpoint["seq2attn"]``; plain types, so weights-only loadable."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "src_spm": src.proto,
        "tgt_spm": tgt.proto,
    }


def save_checkpoint(contents: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint to a temporary file beside ``path``, then rename it into place, so a
    process killed during a save leaves the previous checkpoint intact. ``torch.save`` writes
    straight to the file: no serialised copy of the whole checkpoint is held in memory."""
    atomic_write(Path(path), lambda file: torch.save(contents, file))
