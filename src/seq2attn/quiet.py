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
        # absolute paths; seq2attn logs "resuming from <path>" and the summary's "tested:" line,
        # relative to the working folder
        "Restoring states from the checkpoint path at",
        "Restored all states from the checkpoint at",
        "Loaded model weights from the checkpoint at",
    ),
}


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def one_console_line_per_message() -> None:
    """Under a configured root logger (Hydra's console and train.log), Lightning's messages go
    there alone: the console handler that ``import lightning`` adds to its own logger printed
    each of them a second time (``INFO: Seed set to 1234``)."""
    if not logging.getLogger().handlers:
        return  # no root handler: Lightning's own handler is the only one that shows them
    lightning = logging.getLogger("lightning")
    for handler in list(lightning.handlers):
        if type(handler) is logging.StreamHandler:
            lightning.removeHandler(handler)


def silence_dependency_noise() -> None:
    """Install the filters (once per process; a second call adds nothing) and leave Lightning's
    messages one console line each."""
    one_console_line_per_message()
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, starts in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(starts))
