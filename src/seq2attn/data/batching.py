"""Length-bucketed batches under a token budget, reproducible per epoch and split across ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of example indices whose padded size stays within a budget.

    Example i has size ``z_i = max(s_i, t_i + 1)`` (source length; target length plus BOS/EOS),
    and a batch b costs its padded size ``|b| * max_{i in b} z_i``, which must be
    ``<= max_tokens``; with ``max_sentences`` also ``|b| <= max_sentences``. An example whose size
    alone exceeds ``max_tokens`` becomes a batch on its own rather than being dropped.

    Each epoch, examples are sorted by size (ties broken randomly when ``shuffle``) and cut greedily
    into batches, so padding is small; then the batch order is shuffled. Everything is drawn from
    ``(seed, epoch)``, so every rank computes the same global list. For R = ``num_replicas`` ranks,
    the largest batches are halved until the count is a multiple of R (batches are repeated only
    when there are too few examples for that), and rank r takes batches ``r, r + R, ...``: equal
    counts, disjoint ranks, each example once per epoch. Without ``shuffle`` the order stays
    length-sorted (evaluation). With ``with_epoch`` a batch holds ``(epoch, index)`` pairs, for a
    dataset whose examples change from epoch to epoch (``SampledPairDataset``).
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int | None,
        max_sentences: int | None,
        shuffle: bool,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        with_epoch: bool = False,
    ) -> None:
        if max_tokens is None and max_sentences is None:
            raise ValueError("TokenBudgetBatchSampler needs max_tokens or max_sentences, or both")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"got {len(src_lengths)} source and {len(tgt_lengths)} target lengths")
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        self.sizes = np.maximum(self.src_lengths, self.tgt_lengths + 1)
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_replicas, self.rank, self.with_epoch = num_replicas, rank, with_epoch
        self._resume_at = 0
        # Cut points depend only on the sorted sizes, so the count is the same in every epoch.
        self._num_batches = len(self._global_batches()) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, batch: int) -> None:
        """Start the next iteration at this rank's batch ``batch`` (a run resumed mid-epoch)."""
        self._resume_at = batch

    def _fits(self, count: int, longest: int) -> bool:
        return (self.max_tokens is None or count * longest <= self.max_tokens) and (
            self.max_sentences is None or count <= self.max_sentences
        )

    def _sorted_indices(self, rng: np.random.Generator) -> np.ndarray:
        perm = rng.permutation(len(self.sizes)) if self.shuffle else np.arange(len(self.sizes))
        keys = (self.tgt_lengths[perm], self.src_lengths[perm], self.sizes[perm])
        return perm[np.lexsort(keys)]  # by size, then source, then target length; stable

    def _chunk(self, indices: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        for index in indices.tolist():
            size = int(self.sizes[index])  # ascending, so the newcomer is the longest
            if batches and self._fits(len(batches[-1]) + 1, size):
                batches[-1].append(index)
            else:
                batches.append([index])
        return batches

    def _equalise(self, batches: list[list[int]]) -> list[list[int]]:
        while len(batches) % self.num_replicas and any(len(b) > 1 for b in batches):
            i = max(range(len(batches)), key=lambda j: len(batches[j]))
            half = len(batches[i]) // 2
            batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
        missing = -len(batches) % self.num_replicas  # > 0 only with fewer examples than needed
        return batches + [batches[j % len(batches)] for j in range(missing)]

    def _global_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self._equalise(self._chunk(self._sorted_indices(rng)))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[Any]]:
        start, self._resume_at = self._resume_at, 0
        epoch = self.epoch
        batches = self._global_batches()[self.rank :: self.num_replicas][start:]
        if self.with_epoch:
            yield from ([(epoch, index) for index in batch] for batch in batches)
        else:
            yield from batches

    def __len__(self) -> int:
        return self._num_batches
