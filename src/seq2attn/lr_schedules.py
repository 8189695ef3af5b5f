"""Learning-rate schedules stepped once per optimizer step: multipliers of the base rate.

``WarmupCosine``: lr_s = lr · s/w for s < w, then lr · (f + (1 - f) · ½(1 + cos(π · p))), decaying
to the fraction f at p = 1, with p = min(1, max((s - w)/(T - w), τ)): the steps' progress, or the
fraction τ of ``trainer.max_time`` spent when :class:`seq2attn.callbacks.AnnealToTimeLimit`
reports it, whichever is further along.
``InverseSqrt`` (Vaswani et al. 2017, fairseq): lr_s = lr · min((s + 1)/w, sqrt(w/(s + 1))).
Both are picklable objects, so a resumed run restores them from the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupCosineFactor:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``final_ratio`` at
    ``total_steps`` (held there afterwards), or sooner when ``time_fraction`` (the share of a
    time limit spent, kept up to date by a callback) runs ahead of the steps."""

    warmup_steps: int
    total_steps: int
    final_ratio: float = 0.0
    time_fraction: float = field(default=0.0, compare=False)

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


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, final_ratio: float = 0.0
) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`WarmupCosineFactor`."""
    return LambdaLR(optimizer, WarmupCosineFactor(warmup_steps, total_steps, final_ratio))


def inverse_sqrt(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """A :class:`LambdaLR` following :class:`InverseSqrtFactor`."""
    return LambdaLR(optimizer, InverseSqrtFactor(warmup_steps))
