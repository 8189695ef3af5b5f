"""The beam-5 decoding settings searched on val, one procedure for every tool.

The grid crosses the length normalisation (``avg``: the score divided by the output length, as
OpenNMT-py's default; GNMT's ``((5 + |Y|) / 6)^alpha`` with alpha 0.6, 1.0, 1.4) with n-gram
repeat blocking off or 3 (no trigram twice in a hypothesis). It is listed simplest first: no
blocking before blocking, and within each, ``avg`` (no parameter) before alpha ascending. The
setting chosen is the first in that order whose val BLEU is within TOLERANCE of the best one:
a setting that wins on val by less than that is not worth its extra feature.

Each tool spells a setting its own way: seq2attn's ``decoding.*`` overrides, onmt_translate's
``-length_penalty avg|wu -alpha A -block_ngram_repeat N``, JoeyNMT's ``beam_alpha`` and
``no_repeat_ngram_size`` (-1: off). JoeyNMT's beam search has no ``avg`` normalisation, so it
searches the six GNMT settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOLERANCE = 0.2  # BLEU


@dataclass(frozen=True)
class DecodingSetting:
    """A length normalisation (``avg`` or ``gnmt`` with ``alpha``) and an n-gram block size."""

    length_penalty: str
    alpha: float = 0.0
    block_ngram: int = 0

    @property
    def name(self) -> str:
        """``avg``, ``gnmt1.0``, ``gnmt0.6+block3``: the key of its val score."""
        penalty = "avg" if self.length_penalty == "avg" else f"gnmt{self.alpha:g}"
        return penalty + (f"+block{self.block_ngram}" if self.block_ngram else "")

    def seq2attn(self) -> tuple[str, ...]:
        """Overrides of ``src/eval.py ... decoding=beam``."""
        return (
            f"decoding.length_penalty_type={self.length_penalty}",
            f"decoding.length_penalty={self.alpha:g}",
            f"decoding.no_repeat_ngram_size={self.block_ngram}",
        )

    def options(self, tool: str) -> dict[str, Any] | None:
        """A peer's decoding options (onmt_translate flags, JoeyNMT ``testing`` keys); None
        where the tool cannot decode with this setting."""
        if tool == "opennmt":
            penalty: dict[str, Any] = {"length_penalty": "avg"}
            if self.length_penalty == "gnmt":
                penalty = {"length_penalty": "wu", "alpha": self.alpha}
            return {**penalty, "block_ngram_repeat": self.block_ngram}
        if tool == "joeynmt":
            if self.length_penalty == "avg":
                return None
            return {"beam_alpha": self.alpha, "no_repeat_ngram_size": self.block_ngram or -1}
        raise ValueError(f"no decoding options known for {tool!r}")


GRID = tuple(
    DecodingSetting(penalty, alpha, block)
    for block in (0, 3)
    for penalty, alpha in (("avg", 0.0), ("gnmt", 0.6), ("gnmt", 1.0), ("gnmt", 1.4))
)
BY_NAME = {setting.name: setting for setting in GRID}


def grid_for(tool: str) -> tuple[DecodingSetting, ...]:
    """The settings that ``tool`` can decode with, simplest first."""
    if tool == "seq2attn":
        return GRID
    return tuple(setting for setting in GRID if setting.options(tool) is not None)


def choose(val_bleu: Mapping[str, float], tolerance: float = TOLERANCE) -> DecodingSetting:
    """The simplest setting of the grid whose val BLEU is within ``tolerance`` of the best."""
    if not val_bleu:
        raise ValueError("no val scores to choose a decoding setting from")
    unknown = sorted(set(val_bleu) - set(BY_NAME))
    if unknown:
        raise ValueError(f"not settings of the grid: {', '.join(unknown)}")
    best = max(val_bleu.values())
    return next(s for s in GRID if s.name in val_bleu and val_bleu[s.name] >= best - tolerance)
