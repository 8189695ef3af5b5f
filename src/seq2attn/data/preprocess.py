"""Preprocessing of raw pairs: Unicode normalisation and filters, each counted and logged.

Training pairs go through two stages. :class:`TextFilter` runs while the pairs stream in, before
SentencePiece sees any text: ``max_chars`` drops over-long lines (a line of millions of
characters never reaches a tokenizer call), then both sides are normalised, then ``drop_empty``
drops pairs with an empty side. :class:`LengthFilter` runs on the encoded lengths:
``min_length``, ``max_length`` (pieces, both sides) and ``max_length_ratio``. A pair is counted
by the first filter that removes it, in that order.

Validation and test pairs are never filtered, so scores stay comparable with published ones:
sources are normalised like training text, references are kept verbatim for BLEU, and only the
copies given to the tokenizer are cut to ``max_chars``.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from seq2attn.data.corpus import CorpusError, ParallelCorpus

log = logging.getLogger(__name__)

NormalizationForm = Literal["NFKC", "NFC", "none"]


def _report(where: str, total: int, removed: dict[str, int]) -> int:
    """Log what each filter removed; raise a CorpusError when nothing is left."""
    kept = total - sum(removed.values())
    summary = ", ".join(f"{name} removed {count}" for name, count in removed.items())
    log.info("%s: kept %d of %d pairs (%s)", where, kept, total, summary)
    if total == 0:
        raise CorpusError(f"{where} is empty: it has no pairs")
    if kept == 0:
        raise CorpusError(f"{where}: no pair is left of {total} after filtering ({summary})")
    return kept


@dataclass(frozen=True)
class TextFilter:
    """Character-level preprocessing (see the module docstring).

    Attributes:
        normalization: Unicode normal form applied to both sides, or ``"none"``.
        drop_empty: drop training pairs whose source or target is empty after stripping.
        max_chars: drop training pairs with a side longer than this many characters.
    """

    normalization: NormalizationForm
    drop_empty: bool
    max_chars: int

    def normalize(self, text: str) -> str:
        if self.normalization == "none" or unicodedata.is_normalized(self.normalization, text):
            return text
        return unicodedata.normalize(self.normalization, text)

    def training_pairs(self, pairs: Iterable[tuple[str, str]], where: str) -> ParallelCorpus:
        """The pairs that pass ``max_chars`` and ``drop_empty``, normalised; counts logged.

        Raises:
            CorpusError: no pairs at all, or none left; the message names each filter's count.
        """
        src: list[str] = []
        tgt: list[str] = []
        total = changed = too_long = empty = 0
        for source, target in pairs:
            total += 1
            if len(source) > self.max_chars or len(target) > self.max_chars:
                too_long += 1
                continue
            normal_source, normal_target = self.normalize(source), self.normalize(target)
            changed += normal_source != source or normal_target != target
            if self.drop_empty and not (normal_source and normal_target):
                empty += 1
                continue
            src.append(normal_source)
            tgt.append(normal_target)
        if self.normalization != "none":
            log.info("%s: %s normalisation changed %d pairs", where, self.normalization, changed)
        removed = {f"max_chars={self.max_chars}": too_long}
        if self.drop_empty:
            removed["drop_empty"] = empty
        _report(where, total, removed)
        return ParallelCorpus(src, tgt)

    def evaluation_pairs(
        self, pairs: Iterable[tuple[str, str]], where: str
    ) -> tuple[ParallelCorpus, ParallelCorpus]:
        """``(tokenizer input, texts)`` of an unfiltered split.

        The texts are the normalised sources and the verbatim references; the tokenizer input is
        both sides normalised and cut to ``max_chars`` (the cut is counted and logged).

        Raises:
            CorpusError: the split has no pairs.
        """
        texts = ParallelCorpus.from_pairs((self.normalize(s), t) for s, t in pairs)
        if not texts:
            raise CorpusError(f"{where} is empty: it has no pairs")
        limit = self.max_chars
        pairs_cut = zip(texts.src, texts.tgt, strict=True)
        cut = sum(len(s) > limit or len(t) > limit for s, t in pairs_cut)
        if cut:
            log.warning(
                "%s: %d pairs are longer than max_chars=%d; the model sees their first "
                "max_chars characters, BLEU the whole reference",
                where,
                cut,
                self.max_chars,
            )
        inputs = ParallelCorpus(
            [s[: self.max_chars] for s in texts.src],
            [self.normalize(t)[: self.max_chars] for t in texts.tgt],
        )
        return inputs, texts


@dataclass(frozen=True)
class LengthFilter:
    """Piece-level filters of training pairs (see the module docstring).

    Attributes:
        min_length: drop pairs with a side shorter than this many pieces (>= 1: the encoder
            cannot pack an empty source).
        max_length: drop pairs with a side longer than this many pieces.
        max_length_ratio: drop pairs whose longer side has more than this many times the pieces
            of the shorter side; ``None`` keeps all.
    """

    min_length: int
    max_length: int
    max_length_ratio: float | None

    def keep(self, src_lengths: np.ndarray, tgt_lengths: np.ndarray, where: str) -> np.ndarray:
        """Indices of the pairs that pass; counts logged.

        Raises:
            CorpusError: none is left; the message names each filter's count.
        """
        shorter = np.minimum(src_lengths, tgt_lengths)
        longer = np.maximum(src_lengths, tgt_lengths)
        tests = {
            f"min_length={self.min_length}": shorter >= self.min_length,
            f"max_length={self.max_length}": longer <= self.max_length,
        }
        if self.max_length_ratio is not None:
            ratio = longer / np.maximum(shorter, 1)
            tests[f"max_length_ratio={self.max_length_ratio}"] = ratio <= self.max_length_ratio
        alive = np.ones(len(src_lengths), dtype=bool)
        removed = {}
        for name, passes in tests.items():
            removed[name] = int((alive & ~passes).sum())
            alive &= passes
        _report(where, len(alive), removed)
        return np.flatnonzero(alive)
