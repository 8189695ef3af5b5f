"""Which process of a distributed run this is, without importing Lightning, and the end of its
membership in the run's process group."""

from __future__ import annotations

import sys

_left_group_size = 1  # ranks of the process group this process left during the current command


def is_rank_zero() -> bool:
    """True in the process of global rank 0, and in any process that never loaded Lightning
    (eval, translate: a single process). Lightning keeps the rank on ``rank_zero_only``."""
    rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
    return rank_zero is None or getattr(rank_zero.rank_zero_only, "rank", 0) == 0


def leave_process_group() -> None:
    """Destroy the default process group, if this process has one, so that a following run in
    the same process (tests, a multirun's basic launcher) can start its own."""
    global _left_group_size
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not (distributed.is_available() and distributed.is_initialized()):
        return
    _left_group_size = distributed.get_world_size()
    distributed.destroy_process_group()


def was_one_of_many_ranks() -> bool:
    """True once this process has left a process group of two or more ranks during the current
    command (since :func:`forget_process_group`)."""
    return _left_group_size > 1


def forget_process_group() -> None:
    """Start a command (a multirun job) as a process that was in no process group."""
    global _left_group_size
    _left_group_size = 1
