"""seq2attn.quiet: the dependency messages it names are dropped, every other one still shows."""

from __future__ import annotations

import logging
import warnings

import pytest

from seq2attn.quiet import LOG_MESSAGES, silence_dependency_noise

CHECKPOINTS = "lightning.pytorch.trainer.connectors.checkpoint_connector"
RANK_ZERO = "lightning.pytorch.utilities.rank_zero"


def test_the_named_log_messages_are_dropped_and_others_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silence_dependency_noise()
    silence_dependency_noise()  # twice: still one filter per logger
    assert len(logging.getLogger(CHECKPOINTS).filters) == 1
    with caplog.at_level(logging.INFO):
        logging.getLogger(CHECKPOINTS).info("`weights_only` was not set, defaulting to `False`.")
        logging.getLogger(RANK_ZERO).info("TPU available: False, using: 0 TPU cores")
        logging.getLogger(RANK_ZERO).info("💡 Tip: For seamless cloud uploads, try litmodels")
        logging.getLogger(RANK_ZERO).info("GPU available: False, used: False")
        logging.getLogger(CHECKPOINTS).info("Restoring states from the checkpoint path at x")
        logging.getLogger(RANK_ZERO).info("Restoring states from the checkpoint path at /a/b.ckpt")
        logging.getLogger(RANK_ZERO).info("Loaded model weights from the checkpoint at /a/b.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        "GPU available: False, used: False",
        "Restoring states from the checkpoint path at x",
    ]
    assert set(LOG_MESSAGES) == {CHECKPOINTS, RANK_ZERO}


def test_the_named_warnings_are_ignored_and_others_shown() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_dependency_noise()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1
        )
        warnings.warn("Checkpoint directory /x exists and is not empty.", UserWarning, stacklevel=1)
        warnings.warn("a warning nobody named", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning nobody named"]


def test_lightning_messages_reach_the_console_once_under_a_root_handler() -> None:
    import lightning  # noqa: F401 - adds its console handler to the "lightning" logger

    lightning_logger = logging.getLogger("lightning")
    extra = logging.StreamHandler()
    lightning_logger.addHandler(extra)  # as `import lightning` does in a fresh process
    root = logging.getLogger()
    kept = logging.NullHandler()
    root.addHandler(kept)
    try:
        silence_dependency_noise()
        assert not [h for h in lightning_logger.handlers if type(h) is logging.StreamHandler]
        assert lightning_logger.propagate  # its messages still reach the root's handlers
    finally:
        root.removeHandler(kept)
