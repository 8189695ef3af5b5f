"""The parallel corpus every reader returns, the corpus interface, its bases and error type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from seq2attn.alignment import Alignment

SPLITS = ("train", "val", "test")


class CorpusError(ValueError):
    """Unusable input data; the message names the file, line, counts or filter involved."""


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

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> ParallelCorpus:
        src: list[str] = []
        tgt: list[str] = []
        for source, target in pairs:
            src.append(source)
            tgt.append(target)
        return cls(src, tgt)


class Corpus(Protocol):
    """What the data module needs from a corpus (toy, Multi30k, text files, TSV, HF)."""

    def fingerprint(self, split: str) -> str:
        """A hex digest that changes whenever the pairs of ``split`` can change."""
        ...

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        """The raw ``(source, target)`` pairs of ``split``, streamed in file order."""
        ...

    def splits(self) -> dict[str, ParallelCorpus]:
        """All of ``SPLITS``, read into memory."""
        ...

    def describe(self, split: str) -> str:
        """``split`` and where it comes from, for log lines and errors."""
        ...

    def alignments(self, split: str) -> list[Alignment] | None:
        """Gold word alignments of ``split``'s pairs in order, or None where it has none."""
        ...


class SplitCorpus(ABC):
    """A corpus that streams each split; ``splits`` reads them all into memory."""

    @abstractmethod
    def pairs(self, split: str) -> Iterator[tuple[str, str]]: ...

    def splits(self) -> dict[str, ParallelCorpus]:
        return {name: ParallelCorpus.from_pairs(self.pairs(name)) for name in SPLITS}

    def alignments(self, split: str) -> list[Alignment] | None:
        """Gold word alignments of ``split``'s pairs in order, or None where it has none."""
        return None


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}, expected one of {SPLITS}")
