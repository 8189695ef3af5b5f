"""Learning-rate schedules stepped once per optimizer step: multipliers of the base rate.

``WarmupCosine``: lr_s = lr · s/w for s < w, then lr · (f + (1 - f) · ½(1 + cos(π · p))), decaying
to the fraction f at p = 1, with p = min(1, max((s - w)/(T - w), τ)): the steps' progress, or the
fraction τ of ``trainer.max_time`` spent (``scheduler.anneal_to_time_limit=true``: the schedule
reads it from a clock at every step), whichever is further along.
``InverseSqrt`` (Vaswani et al. 2017, fairseq): lr_s = lr · min((s + 1)/w, sqrt(w/(s + 1))).
Both are picklable objects, so a resumed run restores them from the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupCosineFactor:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``final_ratio`` at
    ``total_steps`` (held there afterwards), or sooner when the share of a time limit spent,
    read from ``clock`` at each step and kept in ``time_fraction``, runs ahead of the steps."""

    warmup_steps: int
    total_steps: int
    final_ratio: float = 0.0
    time_fraction: float = field(default=0.0, compare=False)
    clock: Callable[[], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"scheduler.warmup_steps={self.warmup_steps}: must be >= 0")
        if self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"scheduler.total_steps={self.total_steps}: must exceed scheduler.warmup_steps="
                f"{self.warmup_steps} (it defaults to trainer.max_steps, so set that)"
            )
        if not 0.0 <= self.final_ratio <= 1.0:
            raise ValueError(f"scheduler.final_ratio={self.final_ratio}: must lie in [0, 1]")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.clock is not None:
            self.time_fraction = self.clock()
        steps = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        progress = min(1.0, max(steps, self.time_fraction))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_ratio + (1.0 - self.final_ratio) * cosine


@dataclass(frozen=True)
class InverseSqrtFactor:
    """Linear warm-up to the base rate at ``warmup_steps``, then decay with 1/sqrt(step)."""

    warmup_steps: int

    def __post_init__(self) -> None:
        if self.warmup_steps < 1:
            raise ValueError(f"scheduler.warmup_steps={self.warmup_steps}: must be >= 1")

    def __call__(self, step: int) -> float:
        step += 1
        return min(step / self.warmup_steps, math.sqrt(self.warmup_steps / step))


class ClockedLambdaLR(LambdaLR):
    """A :class:`LambdaLR` whose saved state leaves out its factors' clocks (a clock belongs to
    the running process; a resumed run brings its own)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for factor in state["lr_lambdas"]:
            if isinstance(factor, dict):
                factor.pop("clock", None)
        return state


def warmup_cosine(
    optimizer: Optimizer,
    warmup_steps: int,
    total_steps: int,
    final_ratio: float = 0.0,
    clock: Callable[[], float] | None = None,
) -> LambdaLR:
    """A scheduler following :class:`WarmupCosineFactor`; ``clock`` gives the share of the time
    limit spent."""
    factor = WarmupCosineFactor(warmup_steps, total_steps, final_ratio, clock=clock)
    return ClockedLambdaLR(optimizer, factor)


def inverse_sqrt(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`InverseSqrtFactor`."""
    return LambdaLR(optimizer, InverseSqrtFactor(warmup_steps))
