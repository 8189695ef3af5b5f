"""A training DataLoader whose place in the epoch is saved in checkpoints.

Lightning stores the ``state_dict`` of a stateful loader in each checkpoint and hands it back
on resume. Without it, a run resumed mid-epoch would replay the epoch's batches from the start;
with it, the epoch continues with the batch after the last one trained on, in the same order
(the batch order is a function of the seed and the epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from seq2attn.data.batching import TokenBudgetBatchSampler


def own_generator() -> torch.Generator:
    """A generator for a DataLoader's per-iterator seed draw, which would otherwise come from the
    global stream that dropout uses: starting an epoch or a validation then shifts no training
    randomness, so a resumed run draws the same dropout masks as an uninterrupted one."""
    return torch.Generator().manual_seed(0)


class ResumableDataLoader(DataLoader):
    """DataLoader over a :class:`TokenBudgetBatchSampler` that resumes mid-epoch.

    Iteration e (from 0) of the loader is epoch e of the sampler, so every epoch has its own batch
    order. The loader counts the epochs itself: Lightning sets the epoch of
    ``batch_sampler.sampler`` only, which a batch sampler of its own does not have, and after a
    resume its count can run ahead of the data (it counts a run stopped mid-epoch by max_steps as
    one epoch further). ``batches_done()`` tells how many batches of the current epoch have been
    trained on; it is read when a checkpoint is written. A resumed loader first finishes the saved
    epoch from the batch after the last one trained on, then goes on with the next epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_sampler: TokenBudgetBatchSampler,
        collate_fn: Callable[[list[Any]], Any],
        num_workers: int,
        batches_done: Callable[[], int],
    ) -> None:
        super().__init__(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=own_generator(),
        )
        self.batches_done = batches_done
        self._next_epoch: int | None = 0  # None: the epoch load_state_dict gave the sampler

    def __iter__(self) -> Any:
        sampler = self.batch_sampler
        assert isinstance(sampler, TokenBudgetBatchSampler)
        if self._next_epoch is not None:
            sampler.set_epoch(self._next_epoch)
        self._next_epoch = sampler.epoch + 1
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        assert isinstance(sampler, TokenBudgetBatchSampler)
        return {"epoch": sampler.epoch, "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        assert isinstance(sampler, TokenBudgetBatchSampler)
        sampler.set_epoch(state["epoch"])
        sampler.resume_at(state["batches_done"])
        self._next_epoch = None
