"""Teacher-forcing ratio as a pure function of the global optimizer step.

The ratio is the probability that the decoder reads the gold previous token instead of its own
prediction (Bengio et al. 2015, "Scheduled Sampling"). Being a function of the step alone, it
survives resume and is identical on every rank. During ``warmup_steps`` the ratio stays at its
starting value; ``i`` below counts the steps after warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Feedback(str, Enum):
    """Which token is fed back when the gold one is not: the argmax or a sample."""

    argmax = "argmax"
    sample = "sample"


class SamplingMode(str, Enum):
    """How predictions are obtained: the exact step loop, or a teacher-forced first pass
    followed by a parallel second pass on the mixed inputs (Duckworth et al. 2019)."""

    step = "step"
    two_pass = "two_pass"


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"teacher_forcing.{name}={value}: must lie in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base: the fed-back token kind and the warm-up length shared by every schedule."""

    feedback: Feedback = Feedback.argmax
    mode: SamplingMode = SamplingMode.step
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "feedback", Feedback(self.feedback))
        object.__setattr__(self, "mode", SamplingMode(self.mode))
        if self.warmup_steps < 0:
            raise ValueError(f"teacher_forcing.warmup_steps={self.warmup_steps}: must be >= 0")

    def __call__(self, step: int) -> float:
        return self.ratio(max(0, step - self.warmup_steps))

    def ratio(self, i: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class AlwaysSchedule(Schedule):
    """ratio = 1: pure teacher forcing (allows the fully parallel decoder path)."""

    def ratio(self, i: int) -> float:
        return 1.0


@dataclass(frozen=True, kw_only=True)
class NeverSchedule(Schedule):
    """ratio = 0: free running, the decoder always reads its own previous prediction."""

    def ratio(self, i: int) -> float:
        return 0.0


@dataclass(frozen=True, kw_only=True)
class ConstantSchedule(Schedule):
    """ratio = p."""

    p: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ratio("p", self.p)

    def ratio(self, i: int) -> float:
        return self.p


@dataclass(frozen=True, kw_only=True)
class LinearSchedule(Schedule):
    """ratio_i = max(end, start - (start - end) * i / decay_steps)."""

    start: float = 1.0
    end: float = 0.5
    decay_steps: int = 10000

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ratio("start", self.start)
        _check_ratio("end", self.end)
        if self.decay_steps <= 0:
            raise ValueError(f"teacher_forcing.decay_steps={self.decay_steps}: must be > 0")

    def ratio(self, i: int) -> float:
        return max(self.end, self.start - (self.start - self.end) * i / self.decay_steps)


@dataclass(frozen=True, kw_only=True)
class ExponentialSchedule(Schedule):
    """ratio_i = max(floor, start * k^i), with 0 < k < 1."""

    start: float = 1.0
    k: float = 0.9999
    floor: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ratio("start", self.start)
        _check_ratio("floor", self.floor)
        if not 0.0 < self.k < 1.0:
            raise ValueError(f"teacher_forcing.k={self.k}: must lie in (0, 1)")

    def ratio(self, i: int) -> float:
        return max(self.floor, self.start * self.k**i)


@dataclass(frozen=True, kw_only=True)
class InverseSigmoidSchedule(Schedule):
    """ratio_i = max(floor, k / (k + exp(i / k))), with k >= 1."""

    k: float = 1000.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ratio("floor", self.floor)
        if self.k < 1.0:
            raise ValueError(f"teacher_forcing.k={self.k}: must be >= 1")

    def ratio(self, i: int) -> float:
        exponent = min(i / self.k, 700.0)  # exp overflows float64 past ~709
        return max(self.floor, self.k / (self.k + math.exp(exponent)))
