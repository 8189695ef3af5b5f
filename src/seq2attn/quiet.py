"""Messages of the dependencies that tell a user nothing about their run, silenced by their exact
text at import of the training task (never a blanket filter: any other warning still shows)."""

from __future__ import annotations

import logging
import warnings

# warnings.warn messages (regular expressions matched at the start of the message)
WARNINGS = (
    # Lightning's own pytree helper calls a torch API that torch deprecated
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # epoch metrics are computed over the hypotheses of every rank already (metrics.py)
    r".*sync_dist=True.*when logging on epoch level",
    # a run resumed in its own folder finds its checkpoints there
    r"Checkpoint directory .* exists and is not empty",
)
# logger name -> starts of the log messages it drops
LOG_MESSAGES = {
    # at every checkpoint save: seq2attn saves full checkpoints and loads them weights-only
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
    "lightning.pytorch.utilities.rank_zero": (
        "TPU available:",
        "HPU available:",
        "💡 Tip:",  # an advertisement for a hosted service
    ),
}


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def silence_dependency_noise() -> None:
    """Install the filters (once per process; a second call adds nothing)."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, starts in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(starts))
