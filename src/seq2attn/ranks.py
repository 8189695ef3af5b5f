"""Which process of a distributed run this is, without importing Lightning."""

from __future__ import annotations

import sys


def is_rank_zero() -> bool:
    """True in the process of global rank 0, and in any process that never loaded Lightning
    (eval, translate: a single process). Lightning keeps the rank on ``rank_zero_only``."""
    rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
    return rank_zero is None or getattr(rank_zero.rank_zero_only, "rank", 0) == 0
