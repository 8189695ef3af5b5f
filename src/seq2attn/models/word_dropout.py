"""Word dropout: whole token embeddings dropped while training, one draw per token
(Sennrich et al., 2016; Gal & Ghahramani, 2016 drop word types, every occurrence together).

e'_t = m_t e_t / (1 - p) with m_t ~ Bernoulli(1 - p), one draw per token: the model must
translate with some source words missing (a source-side noise the encoder learns to fill in)
or continue a target prefix with some words missing (less reliance on the previous word).
Sennrich & Zhang (2019) found it among the regularisers that matter most for small corpora.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class WordDropout(nn.Module):
    """Zero each position's whole vector of (..., E) with probability ``p``, rescale the rest."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"word dropout p={p}: must lie in [0, 1)")
        self.p = p

    def forward(self, embedded: Tensor) -> Tensor:
        # dropout1d zeroes whole channels of (N, C, L) or (C, L): here a token's E-vector
        return F.dropout1d(embedded, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
