"""How the ``src/*.py`` commands end on bad input (one line on stderr, exit code 2) and on a
training fault every rank agreed on (one line, exit code 1).

A rank of a multi-process run that ends this way leaves without the interpreter's shutdown.
There, torch can destroy the gloo process group while one of its worker threads waits for the
GIL to free a finished collective's tensors, and the process never ends (a peer that exits
first fails such a collective at just that moment). Logs and output are flushed first.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf

from seq2attn.checkpoints import CheckpointError
from seq2attn.config import ConfigError
from seq2attn.data.corpus import CorpusError
from seq2attn.faults import NonFiniteLoss
from seq2attn.ranks import is_rank_zero, was_one_of_many_ranks

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
        removed = is_rank_zero() and remove_unused_run_folder(cfg)
        _fail(error, 2, log_to_files=not removed)
    except NonFiniteLoss as error:  # every rank agreed on it: rank 0 says it for all
        _fail(error, 1, show=is_rank_zero())


# what a run folder holds before any work: Hydra's config, the task's log, the run record
BEFORE_WORK = {".hydra", "train.log", "eval.log", "translate.log", "run.json"}


def remove_unused_run_folder(cfg: DictConfig) -> bool:
    """Remove the run folder of a command refused before any work, one that holds nothing but
    ``BEFORE_WORK``; True if it did. A folder with anything else (a resumed run's checkpoints,
    outputs) is kept."""
    folder = Path(str(OmegaConf.select(cfg, "paths.output_dir", default="") or ""))
    if not (folder.name and folder.is_dir()):
        return False
    if not {p.name for p in folder.iterdir()} <= BEFORE_WORK:
        return False
    root, here = logging.getLogger(), folder.resolve()
    for handler in list(root.handlers):  # its log file goes with it
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == here:
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _fail(error: Exception, code: int, show: bool = True, log_to_files: bool = True) -> NoReturn:
    if log_to_files:
        _log_to_files(error)
    if show:
        print(f"error: {error}", file=sys.stderr)
    if was_one_of_many_ranks():
        _exit_now(code)
    raise SystemExit(code) from None


def _exit_now(code: int) -> NoReturn:
    """End the process at once, after flushing what it has written (module docstring: why)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _log_to_files(error: Exception) -> None:
    """Keep the error in the run's log file without printing it a second time on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
