"""Faults that every rank of a run agrees on: a non-finite loss and a stop signal.

Under DDP each rank sees only its own loss and its own signals. A rank acting alone leaves the
others waiting in a collective forever, so each decision is an all-reduced value (the maximum
over ranks) taken at a point that every rank reaches: each training step, and each batch of a
validation or test (ranks get equal batch counts, :class:`TokenBudgetBatchSampler`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import lightning as L


class NonFiniteLoss(FloatingPointError):
    """A NaN or infinite training loss on some rank, under ``nonfinite_loss=stop``."""


class Preempted(Exception):
    """SIGTERM or SIGINT arrived during a validation or test; the run stops after the batch."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def largest_over_ranks(trainer: L.Trainer, value: int) -> int:
    """``max`` of ``value`` over every rank (``value`` itself in a single process)."""
    if trainer.world_size == 1:
        return value
    tensor = torch.tensor(value, dtype=torch.int64, device=trainer.strategy.root_device)
    return int(trainer.strategy.reduce(tensor, reduce_op="max").item())
