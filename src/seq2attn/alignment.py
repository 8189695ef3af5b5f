"""Word alignments (Pharaoh format), their projection onto SentencePiece pieces, and attention
read as alignment: argmax links, alignment error rate (AER) and attention entropy.

Links are ``(source_index, target_index)`` pairs, 0-based.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

Link = tuple[int, int]

WORD_START = "\u2581"  # SentencePiece's "▁", which marks a piece that starts a word
_PHARAOH_LINK = re.compile(r"(\d+)([-?])(\d+)")


@dataclass(frozen=True)
class Alignment:
    """Sure links S and possible links P of one sentence pair, with S ⊆ P (possible always
    includes sure)."""

    sure: frozenset[Link]
    possible: frozenset[Link]

    def __post_init__(self) -> None:
        if not self.sure <= self.possible:
            extra = sorted(self.sure - self.possible)
            raise ValueError(f"sure links {extra} are missing from the possible links")


class AlignmentFileError(ValueError):
    """An alignment file that cannot be read or does not fit its corpus; the message names the
    file and, for a bad line, its 1-based number."""


def parse_pharaoh(line: str) -> Alignment:
    """One Pharaoh line: whitespace-separated ``i-j`` (sure, hence also possible) and ``i?j``
    (possible only) links, i the source word, j the target word, both 0-based."""
    sure: set[Link] = set()
    possible: set[Link] = set()
    for token in line.split():
        match = _PHARAOH_LINK.fullmatch(token)
        if match is None:
            raise ValueError(f"malformed link {token!r}; expected 'i-j' or 'i?j'")
        link = (int(match[1]), int(match[3]))
        possible.add(link)
        if match[2] == "-":
            sure.add(link)
    return Alignment(frozenset(sure), frozenset(possible))


def read_pharaoh(
    path: str | Path, source_lengths: Sequence[int], target_lengths: Sequence[int]
) -> list[Alignment]:
    """Read a UTF-8 Pharaoh file (optionally ``.gz``), one line per sentence pair, checking
    every link lies within its pair (``source_lengths[n]`` source words, ``target_lengths[n]``
    target words)."""
    if len(source_lengths) != len(target_lengths):
        raise ValueError(
            f"{len(source_lengths)} source lengths but {len(target_lengths)} target lengths"
        )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as file:
        raw = file.read().split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    lines: list[str] = []
    for number, raw_line in enumerate(raw, start=1):
        try:
            lines.append(raw_line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise AlignmentFileError(f"{path}, line {number}: bytes that are not UTF-8") from error
    if len(lines) != len(source_lengths):
        raise AlignmentFileError(
            f"{path} has {len(lines)} lines, "
            f"the corpus split has {len(source_lengths)} sentence pairs"
        )
    alignments = []
    for number, (line, n_source, n_target) in enumerate(
        zip(lines, source_lengths, target_lengths, strict=True), start=1
    ):
        try:
            alignment = parse_pharaoh(line)
            _check_in_range(alignment, n_source, n_target)
        except ValueError as error:
            raise AlignmentFileError(f"{path}, line {number}: {error}") from error
        alignments.append(alignment)
    return alignments


def _check_in_range(alignment: Alignment, n_source: int, n_target: int) -> None:
    """Raise ValueError for the first link with i >= n_source or j >= n_target."""
    for i, j in sorted(alignment.possible):
        if i >= n_source or j >= n_target:
            kind = "-" if (i, j) in alignment.sure else "?"
            raise ValueError(
                f"link {i}{kind}{j} is outside the sentence pair "
                f"({n_source} source words, {n_target} target words)"
            )


def word_of_pieces(pieces: Sequence[str]) -> list[int]:
    """The word index of each piece: a piece starting with "▁" starts a new word; the first
    piece is word 0 whether or not it has "▁"."""
    words: list[int] = []
    word = -1
    for position, piece in enumerate(pieces):
        if position == 0 or piece.startswith(WORD_START):
            word += 1
        words.append(word)
    return words


def project_to_pieces(
    alignment: Alignment, source_words: Sequence[int], target_words: Sequence[int]
) -> Alignment:
    """Piece-level alignment: pieces p, q are linked iff their words are,
    (p, q) ∈ L ⇔ (source_words[p], target_words[q]) ∈ L, for L = S and L = P.

    ``source_words`` / ``target_words`` give each piece's word (see `word_of_pieces`).
    """
    source_pieces = _pieces_by_word(source_words)
    target_pieces = _pieces_by_word(target_words)

    def expand(links: frozenset[Link]) -> frozenset[Link]:
        projected: set[Link] = set()
        for i, j in links:
            if i not in source_pieces or j not in target_pieces:
                raise ValueError(f"link {i}-{j} names a word that has no pieces")
            projected.update((p, q) for p in source_pieces[i] for q in target_pieces[j])
        return frozenset(projected)

    return Alignment(expand(alignment.sure), expand(alignment.possible))


def _pieces_by_word(words: Sequence[int]) -> dict[int, list[int]]:
    """Invert piece -> word into word -> its pieces."""
    pieces: dict[int, list[int]] = {}
    for piece, word in enumerate(words):
        pieces.setdefault(word, []).append(piece)
    return pieces


def argmax_links(weights: Tensor) -> frozenset[Link]:
    """Hard alignment of one sentence's attention ``weights`` (T, S), target x source: each
    target t links to s* = argmax_s weights[t, s], giving (s*, t). Ties go to the lowest source
    index, as ``torch.argmax`` returns the first maximal value."""
    if weights.dim() != 2:
        raise ValueError(f"expected (T, S) weights, got shape {tuple(weights.shape)}")
    sources = weights.argmax(dim=1).tolist()
    return frozenset((source, target) for target, source in enumerate(sources))


@dataclass
class AERCounts:
    """Corpus totals for AER: |A|, |S|, |A ∩ S| and |A ∩ P| summed over sentences, with A the
    predicted links."""

    predicted: int = 0
    sure: int = 0
    predicted_and_sure: int = 0
    predicted_and_possible: int = 0

    def add(self, predicted: Set[Link], alignment: Alignment) -> None:
        """Accumulate one sentence's predicted links A against its reference alignment."""
        self.predicted += len(predicted)
        self.sure += len(alignment.sure)
        self.predicted_and_sure += len(predicted & alignment.sure)
        self.predicted_and_possible += len(predicted & alignment.possible)

    @property
    def aer(self) -> float:
        """AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|) (Och & Ney 2003) over the corpus totals;
        NaN when |A| + |S| = 0 (no predicted and no sure links: AER is undefined)."""
        total = self.predicted + self.sure
        if total == 0:
            return math.nan
        return 1.0 - (self.predicted_and_sure + self.predicted_and_possible) / total


def aer(predicted: Set[Link], alignment: Alignment) -> float:
    """AER of one sentence (see `AERCounts.aer`)."""
    counts = AERCounts()
    counts.add(predicted, alignment)
    return counts.aer


def attention_entropy(weights: Tensor, target_mask: Tensor) -> Tensor:
    """Mean over real target positions of H = -Σ_s a_s log a_s (nats, 0 log 0 = 0), 0-dim.

    ``weights`` (B, T, S) rows sum to 1 over the source, padding columns hold 0;
    ``target_mask`` (B, T) is True at real target positions, and padding rows do not count.
    Zero weights get a zero gradient rather than NaN. NaN when no position is real.
    """
    if weights.dim() != 3 or target_mask.shape != weights.shape[:2]:
        raise ValueError(
            f"expected weights (B, T, S) and target_mask (B, T), got "
            f"{tuple(weights.shape)} and {tuple(target_mask.shape)}"
        )
    log_weights = torch.where(weights > 0, weights, 1.0).log()
    entropy = -(weights * log_weights).sum(dim=-1)
    return entropy.masked_select(target_mask.bool()).mean()


@dataclass(frozen=True)
class PieceAlignment:
    """A sentence pair's gold word alignment with the word of each source and target piece
    (``word_of_pieces``), so that links between pieces can be read as links between words."""

    words: Alignment
    source_words: Sequence[int]
    target_words: Sequence[int]

    def word_links(self, piece_links: Set[Link]) -> frozenset[Link]:
        """Piece links (p, q) as word links (source_words[p], target_words[q]): two words are
        linked when any of their pieces are."""
        return frozenset((self.source_words[p], self.target_words[q]) for p, q in piece_links)


def piece_alignment(
    words: Alignment,
    source_pieces: Sequence[str],
    target_pieces: Sequence[str],
    source_text: str,
    target_text: str,
) -> PieceAlignment | None:
    """``words`` (over the whitespace words of the texts) with the word of every piece the
    model reads; None when the pieces do not split into those words (a cut sentence, or a
    normalisation that joined or split words), so the sentence is left out of AER."""
    source_words = word_of_pieces(source_pieces)
    target_words = word_of_pieces(target_pieces)
    fits = source_words[-1:] == [len(source_text.split()) - 1] and target_words[-1:] == [
        len(target_text.split()) - 1
    ]
    return PieceAlignment(words, source_words, target_words) if fits else None


@dataclass
class AttentionAsAlignment:
    """Teacher-forced attention of a split's batches read as alignment: the corpus AER of its
    argmax links, read as word links, against the gold word alignments (for sentences that
    have one; scored over words, so it can reach 0 whatever the tokenisation) and the mean
    entropy of its rows at real target positions (the pieces and EOS)."""

    counts: AERCounts = field(default_factory=AERCounts)
    entropy_sum: float = 0.0
    rows: int = 0

    def add(
        self,
        weights: Tensor,
        target_mask: Tensor,
        src_lengths: Tensor,
        gold: Sequence[PieceAlignment | None],
    ) -> None:
        """One batch: weights (B, T, S), target_mask (B, T) True at pieces and EOS, src_lengths
        (B,), and each sentence's gold alignment or None. Row t of a sentence with n pieces is
        the attention that predicted piece t (t < n); its EOS row has no gold link."""
        weights = weights.detach().float()
        real = int(target_mask.sum())
        if real:
            self.entropy_sum += float(attention_entropy(weights, target_mask)) * real
            self.rows += real
        for b, alignment in enumerate(gold):
            if alignment is None:
                continue
            pieces = int(target_mask[b].sum()) - 1
            links = argmax_links(weights[b, :pieces, : int(src_lengths[b])])
            self.counts.add(alignment.word_links(links), alignment.words)

    @property
    def entropy(self) -> float:
        """Mean entropy in nats of the rows added; NaN before any."""
        return self.entropy_sum / self.rows if self.rows else math.nan

    def scores(self) -> dict[str, float]:
        """``attention_entropy`` once rows were added (a model with attention), and ``aer``
        once predicted links were scored (a corpus with gold alignments)."""
        scores = {}
        if self.rows:
            scores["attention_entropy"] = self.entropy
        if self.counts.predicted:
            scores["aer"] = self.counts.aer
        return scores

    def totals(self) -> list[float]:
        """The sums behind both scores, to add up over processes (``from_totals``)."""
        c = self.counts
        return [
            self.entropy_sum,
            self.rows,
            c.predicted,
            c.sure,
            c.predicted_and_sure,
            c.predicted_and_possible,
        ]

    @classmethod
    def from_totals(cls, totals: Sequence[float]) -> AttentionAsAlignment:
        entropy_sum, rows, *counts = totals
        return cls(AERCounts(*(int(c) for c in counts)), float(entropy_sum), int(rows))
