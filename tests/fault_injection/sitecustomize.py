"""Fault injection for the training processes that tests start (imported at interpreter start
when this folder is on PYTHONPATH); each fault is switched on by an environment variable:

- ``FAULT_NAN_RANK`` and ``FAULT_NAN_STEPS`` (comma-separated): the training loss of that rank
  is NaN in those training steps of this process (0-based; a DDP child rank is known by
  ``LOCAL_RANK``, which Lightning sets before starting it).
- ``FAULT_COUNT_STEPS``: a file that receives, at exit, how many optimizer steps this process
  ran (``<file>.rank<N>``); not written by a rank of a multi-process run that ends on an error,
  which leaves without atexit handlers (seq2attn.cli).
- ``FAULT_SIGTERM_AT_VAL_BATCH``: SIGTERM to this process during that batch of the first
  validation after training started; the number of validation batches that started after it is
  written to ``FAULT_SIGTERM_AT_VAL_BATCH_LOG`` at exit.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _nan_loss() -> None:
    from seq2attn import module

    steps = {int(s) for s in os.environ["FAULT_NAN_STEPS"].split(",")}
    real = module.training_nll
    calls = [0]

    def training_nll(*args, **kwargs):  # type: ignore[no-untyped-def]
        value = real(*args, **kwargs)
        calls[0] += 1  # one call per training step
        return value * float("nan") if calls[0] - 1 in steps else value

    module.training_nll = training_nll


def _count_steps() -> None:
    from seq2attn.module import Seq2SeqModule

    real = Seq2SeqModule.optimizer_step

    def optimizer_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _steps[0] += 1
        return real(self, *args, **kwargs)

    Seq2SeqModule.optimizer_step = optimizer_step  # type: ignore[method-assign]
    path = f"{os.environ['FAULT_COUNT_STEPS']}.rank{_rank()}"
    atexit.register(lambda: Path(path).write_text(str(_steps[0])))


def _sigterm_in_validation() -> None:
    from seq2attn.module import Seq2SeqModule

    at = int(os.environ["FAULT_SIGTERM_AT_VAL_BATCH"])
    real = Seq2SeqModule.validation_step
    after = [-1]

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if after[0] >= 0:
            after[0] += 1
        elif not self.trainer.sanity_checking and batch_idx == at:
            os.kill(os.getpid(), signal.SIGTERM)
            after[0] = 0
        return real(self, batch, batch_idx)

    Seq2SeqModule.validation_step = validation_step  # type: ignore[method-assign]
    path = os.environ["FAULT_SIGTERM_AT_VAL_BATCH_LOG"]
    atexit.register(lambda: Path(path).write_text(str(after[0])))


_steps = [0]
if os.environ.get("FAULT_NAN_RANK") == str(_rank()):
    _nan_loss()
if os.environ.get("FAULT_COUNT_STEPS"):
    _count_steps()
if os.environ.get("FAULT_SIGTERM_AT_VAL_BATCH"):
    _sigterm_in_validation()
