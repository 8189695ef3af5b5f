"""Attention: a scorer, a masked softmax over source positions and a weighted sum.

a_t = softmax(score(h_t, h_s)) over the real source positions s;  c_t = sum_s a_t[s] h_s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seq2attn.models.length_shaped import batched_product
from seq2attn.models.scorers import Scorer


def masked_softmax(scores: Tensor, src_pad_mask: Tensor) -> Tensor:
    """Softmax of scores (B, T, S) over S with weight exactly 0 where src_pad_mask (B, S) is True.

    Padding is filled with the dtype's most negative finite value rather than -inf, so a row
    never turns into NaN in reduced precision; the weights there are then zeroed exactly.
    """
    pad = src_pad_mask.unsqueeze(1)  # (B, 1, S)
    weights = scores.masked_fill(pad, torch.finfo(scores.dtype).min).softmax(dim=-1)
    return weights.masked_fill(pad, 0.0)


@dataclass
class AttentionOutput:
    """context (B, T, Hk) and weights (B, T, S)."""

    context: Tensor
    weights: Tensor


class Attention(nn.Module):
    """Global attention over the encoder memory with a pluggable score function."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        self.scorer = scorer

    def prepare(self, keys: Tensor) -> Tensor:
        """Key-only part of the scorer for keys (B, S, Hk); run once per batch."""
        return self.scorer.prepare(keys)

    def forward(
        self, query: Tensor, keys: Tensor, prepared: Tensor, src_pad_mask: Tensor
    ) -> AttentionOutput:
        """Attend with queries (B, T, Hq) over keys (B, S, Hk); src_pad_mask (B, S) True at pad."""
        weights = masked_softmax(self.scorer.score(query, prepared), src_pad_mask)
        return AttentionOutput(context=batched_product(weights, keys), weights=weights)
