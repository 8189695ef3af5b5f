"""Self-describing checkpoints: the run's config and tokenizers travel with the weights.

Writing (the Lightning hooks, atomic files) lives in :mod:`seq2attn.checkpoints.saving`; reading
(format check, run-folder resolution, loading, ensembles) in :mod:`seq2attn.checkpoints.loading`
and averaging in :mod:`seq2attn.checkpoints.averaging`. Reading never imports Lightning.
"""

from __future__ import annotations

from typing import Any

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
