"""The in-memory parallel corpus every reader returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelCorpus:
    """Aligned source and target sentences: ``tgt[i]`` is the translation of ``src[i]``."""

    src: list[str]
    tgt: list[str]

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise ValueError(
                f"ParallelCorpus needs as many targets as sources, got {len(self.src)} sources "
                f"and {len(self.tgt)} targets"
            )

    def __len__(self) -> int:
        return len(self.src)
