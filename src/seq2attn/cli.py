"""How the ``src/*.py`` commands end on bad input (one line on stderr, exit code 2) and on a
training fault every rank agreed on (one line, exit code 1).

A rank that was in a process group of two or more ranks and ends on an error (bad input, a
fault, a crash) leaves through ``os._exit`` once its logs, stdout and stderr are flushed: neither
atexit handlers nor the interpreter's shutdown run. In that shutdown, rank 1 of a two-rank gloo
run stopped by a non-finite loss hung in 3 of 12 runs. Its main thread, holding the GIL while
the process ended, freed DDP's reducer and with it the last reference to the gloo process group,
whose destructor joined a worker thread that waited for the GIL to free a collective's tensors
(a destructor that blocks while holding the GIL: pytorch/pytorch#56297). What kept the reducer
alive until then, and which collective it was, are not known.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf

from seq2attn.checkpoints import CheckpointError
from seq2attn.config import ConfigError
from seq2attn.data.corpus import CorpusError
from seq2attn.faults import NonFiniteLoss
from seq2attn.ranks import forget_process_group, is_rank_zero, was_one_of_many_ranks

log = logging.getLogger(__name__)
INPUT_ERRORS = (ConfigError, CorpusError, CheckpointError)
T = TypeVar("T")


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task for a command-line shim: bad input (config, data files, checkpoints) ends the
    process with its message and exit code 2, a non-finite loss with exit code 1, instead of a
    traceback; any error ends a rank of a multi-process run at once (the module says why)."""
    forget_process_group()
    try:
        return _run_reporting_faults(task, cfg)
    except BaseException as error:
        if not was_one_of_many_ranks():
            raise
        if isinstance(error, SystemExit):  # ours, or Lightning's on a second Ctrl-C
            _exit_now(_exit_status(error))
        traceback.print_exc()  # a crash (or an error while reporting one): traceback, exit 1
        _exit_now(1)


def _run_reporting_faults(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """The task, with bad input and a non-finite loss turned into one line and SystemExit."""
    try:
        return task(cfg)
    except INPUT_ERRORS as error:
        removed = is_rank_zero() and remove_unused_run_folder(cfg)
        _fail(error, 2, log_to_files=not removed)
    except NonFiniteLoss as error:  # every rank agreed on it: rank 0 says it for all
        _fail(error, 1, show=is_rank_zero())


# what a run folder holds before any work: Hydra's config, the task's log, the run record
BEFORE_WORK = {".hydra", "train.log", "eval.log", "translate.log", "config.yaml", "run.json"}


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
    raise SystemExit(code) from None


def _exit_status(stop: SystemExit) -> int:
    """The status Python gives a SystemExit: None is 0, an integer itself, anything else is
    printed on stderr and gives 1."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _exit_now(code: int) -> NoReturn:
    """End the process at once, after flushing what it has written (the module says why)."""
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
