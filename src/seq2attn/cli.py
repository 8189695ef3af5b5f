"""How the ``src/*.py`` commands end on bad input (one line on stderr, exit code 2) and on a
training fault every rank agreed on (one line, exit code 1)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from omegaconf import DictConfig

from seq2attn.checkpoints import CheckpointError
from seq2attn.config import ConfigError
from seq2attn.data.corpus import CorpusError
from seq2attn.faults import NonFiniteLoss
from seq2attn.ranks import is_rank_zero

log = logging.getLogger(__name__)
INPUT_ERRORS = (ConfigError, CorpusError, CheckpointError)
T = TypeVar("T")


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task for a command-line shim: bad input (config, data files, checkpoints) ends the
    process with its message and exit code 2, a non-finite loss with exit code 1, instead of a
    traceback."""
    try:
        return task(cfg)
    except INPUT_ERRORS as error:
        _fail(error, 2)
    except NonFiniteLoss as error:  # every rank agreed on it: rank 0 says it for all
        _fail(error, 1, show=is_rank_zero())


def _fail(error: Exception, code: int, show: bool = True) -> NoReturn:
    _log_to_files(error)
    if show:
        print(f"error: {error}", file=sys.stderr)
    raise SystemExit(code) from None


def _log_to_files(error: Exception) -> None:
    """Keep the error in the run's log file without printing it a second time on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
