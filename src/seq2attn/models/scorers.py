"""Attention score functions score(h_t, h_s) between decoder queries and encoder keys.

Every scorer splits its work in two. ``prepare(keys)`` runs once per batch and returns what
depends only on the encoder memory (for example ``W h_s``); the caller holds the result.
``score(query, prepared)`` then runs for one decoder step (T = 1) or for a whole target
sequence at once (T > 1). Nothing is cached on the module between calls.

A scorer answers for itself: its constructor's keyword arguments are its options (the keys of its
``conf/scorer/*.yaml``), ``check`` rejects options before any weight exists, ``flops`` counts.

Shapes: B batch, T queries, S source positions, Hq query size, Hk key size, H hidden size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2attn.models.length_shaped import batched_product

# Upper bound on the elements of the (B, T_chunk, S, H) tensor the tanh scorers build.
CHUNK_ELEMENTS = 2**22
# a tanh scorer's head: the tanh layer's output (tanh(z), or sigma(2 z) when the flag is set)
# to scores
TanhHead = Callable[[Tensor, bool], Tensor]


@dataclass(frozen=True)
class TokenCosts:
    """Forward FLOPs per source token, per target position and per (target, source) pair."""

    source: int
    target: int
    pair: int


class Scorer(nn.Module):
    """Base class: ``score(query, prepare(keys))`` gives unnormalised scores (B, T, S)."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.query_size = query_size
        self.key_size = key_size

    @classmethod
    def check(cls, query_size: int, key_size: int) -> None:
        """Raise ValueError when options cannot work (with these sizes); no weights are built.

        A subclass takes the options it checks as keyword arguments named as in its constructor,
        which calls this first. A message about one option starts with ``<option>=<value>:``.
        """

    def flops(self) -> TokenCosts:
        """FLOPs of the key preparation per source token, the query part per target position and
        the score per (target, source) pair; matrix products only."""
        raise NotImplementedError(f"{type(self).__name__} does not count its FLOPs")

    def prepare(self, keys: Tensor) -> Tensor:
        """Key-only work, done once per batch: keys (B, S, Hk) -> prepared (B, S, *)."""
        return keys

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        """Scores (B, T, S) of queries (B, T, Hq) against prepared keys."""
        raise NotImplementedError


def _tanh_sum_scores(
    query_part: Tensor, doubled_keys: Tensor, head: TanhHead, width: int
) -> Tensor:
    """head(tanh(q_t + k_s)) for every (t, s), chunked over T to bound memory.

    The keys come doubled from ``prepare``, 2 k_s. In fp32 and fp64 on a CPU the tanh layer is
    computed as tanh(z) = 2 sigma(2 z) - 1: torch's float tanh there costs about three times its
    sigmoid (3.1-3.6 against 1 ns an element, one core of an AMD EPYC with AVX2), the doubling is
    exact in floating point, and ``head`` gets sigma(2 z) with ``halves=True`` and folds the
    2 s - 1 into its first linear layer (:func:`_after_tanh`), so no pass over the pairs is
    added. In bf16 or fp16, and under autocast, where sigma(2 z) rounded near 1/2 would lose small
    z, and off a CPU, the layer is torch's tanh.

    Args:
        query_part: (B, T, H) query projection.
        doubled_keys: (B, S, H) prepared key projection, doubled.
        head: maps the tanh layer (B, T_chunk, S, H) to scores (B, T_chunk, S).
        width: widest layer ``head`` builds, used to size the chunks.
    """
    batch, source_len = doubled_keys.shape[:2]
    chunk = max(1, CHUNK_ELEMENTS // max(1, batch * source_len * width))
    exact = (torch.float32, torch.float64)
    halves = (
        query_part.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and query_part.dtype in exact
        and doubled_keys.dtype in exact
    )
    keys = doubled_keys.unsqueeze(1)

    def tanh_layer(q: Tensor) -> Tensor:  # (B, T_chunk, S, H)
        if halves:
            return torch.sigmoid_(torch.add(keys, q.unsqueeze(2), alpha=2))
        return torch.tanh_(torch.add(q.unsqueeze(2), keys, alpha=0.5))

    return torch.cat([head(tanh_layer(q), halves) for q in query_part.split(chunk, dim=1)], dim=1)


def _after_tanh(layer: nn.Linear, hidden: Tensor, halves: bool) -> Tensor:
    """layer(tanh(z)) from the tanh layer's output: tanh(z) itself, or with ``halves``
    s = sigma(2 z), where W (2 s - 1) + b = (2 W) s + (b - W 1)."""
    if not halves:
        return layer(hidden)
    bias = -layer.weight.sum(dim=1)
    if layer.bias is not None:
        bias = bias + layer.bias
    return F.linear(hidden, 2 * layer.weight, bias)


class DotScorer(Scorer):
    """Luong et al. (2015) dot score: score(h_t, h_s) = h_t · h_s.

    Needs query_size == key_size. With ``project_keys=True`` the keys first go through a
    linear map P to the query size (prepared once): score = h_t · (P h_s).
    """

    def __init__(self, query_size: int, key_size: int, project_keys: bool = False) -> None:
        self.check(query_size, key_size, project_keys)
        super().__init__(query_size, key_size)
        self.key_projection = nn.Linear(key_size, query_size, bias=False) if project_keys else None

    @classmethod
    def check(cls, query_size: int, key_size: int, project_keys: bool = False) -> None:
        if query_size != key_size and not project_keys:
            raise ValueError(
                f"{cls.__name__} needs query_size == key_size, got query_size={query_size} "
                f"and key_size={key_size}; set project_keys=true to project the keys"
            )

    def prepare(self, keys: Tensor) -> Tensor:
        return keys if self.key_projection is None else self.key_projection(keys)

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return batched_product(query, prepared.transpose(1, 2))

    def flops(self) -> TokenCosts:
        projection = 2 * self.key_size * self.query_size if self.key_projection else 0
        return TokenCosts(source=projection, target=0, pair=2 * self.query_size)


class ScaledDotScorer(DotScorer):
    """Scaled dot score (Vaswani et al., 2017): score(h_t, h_s) = h_t · h_s / sqrt(d), d = Hq.

    The scaling keeps the score variance independent of the size d.
    """

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return super().score(query, prepared) / math.sqrt(self.query_size)


class GeneralScorer(Scorer):
    """Luong et al. (2015) general score: score(h_t, h_s) = h_t^T W h_s, W of shape (Hq, Hk).

    ``prepare`` computes W h_s once per batch. With ``scale=True`` the score is divided by
    sqrt(Hq), as in ScaledDotScorer: Adam moves every entry of W by about the learning rate per
    step, so the unscaled bilinear scores grow fast enough to saturate the softmax early.
    ``scale_init=True`` is the control for that explanation: W starts divided by sqrt(Hq), so
    the scores at step 0 equal the scaled score's, but Adam's steps on W stay full-size.
    """

    def __init__(
        self, query_size: int, key_size: int, scale: bool = False, scale_init: bool = False
    ) -> None:
        super().__init__(query_size, key_size)
        self.W = nn.Linear(key_size, query_size, bias=False)
        self.scale = scale
        if scale_init:
            with torch.no_grad():
                self.W.weight.div_(math.sqrt(query_size))

    def prepare(self, keys: Tensor) -> Tensor:
        prepared = self.W(keys)  # (B, S, Hq)
        return prepared / math.sqrt(self.query_size) if self.scale else prepared

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return batched_product(query, prepared.transpose(1, 2))

    def flops(self) -> TokenCosts:
        q, k = self.query_size, self.key_size
        return TokenCosts(source=2 * k * q, target=0, pair=2 * q)


class _TanhScorer(Scorer):
    """Scores v^T tanh(query part + key part) through a tanh layer of ``hidden_size`` units."""

    hidden_size: int
    v: nn.Linear

    @classmethod
    def check(cls, query_size: int, key_size: int, hidden_size: int | None = None) -> None:
        if hidden_size is not None and hidden_size < 1:
            raise ValueError(f"hidden_size={hidden_size}: must be a positive number, or null")

    def _head(self, hidden: Tensor, halves: bool) -> Tensor:
        return _after_tanh(self.v, hidden, halves).squeeze(-1)

    def flops(self) -> TokenCosts:
        q, k, h = self.query_size, self.key_size, self.hidden_size
        return TokenCosts(source=2 * k * h, target=2 * q * h, pair=2 * h)


class ConcatScorer(_TanhScorer):
    """Luong et al. (2015) concat score: score(h_t, h_s) = v^T tanh(W [h_t; h_s]).

    W = [W_q W_k] is applied in two parts, v^T tanh(W_q h_t + W_k h_s), so that W_k h_s is
    prepared once per batch (doubled, as 2 W_k h_s: :func:`_tanh_sum_scores`). ``hidden_size``
    (rows of W) defaults to query_size.
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int | None = None) -> None:
        self.check(query_size, key_size, hidden_size)
        super().__init__(query_size, key_size)
        self.hidden_size = hidden_size or query_size
        self.W = nn.Linear(query_size + key_size, self.hidden_size, bias=False)
        self.v = nn.Linear(self.hidden_size, 1, bias=False)

    def prepare(self, keys: Tensor) -> Tensor:
        return F.linear(keys, 2 * self.W.weight[:, self.query_size :])  # 2 W_k h_s: (B, S, H)

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        query_part = F.linear(query, self.W.weight[:, : self.query_size])  # W_q h_t: (B, T, H)
        return _tanh_sum_scores(query_part, prepared, self._head, self.hidden_size)


class AdditiveScorer(_TanhScorer):
    """Bahdanau et al. (2015) additive score: score(s, h_s) = v^T tanh(W s + U h_s).

    U h_s is prepared once per batch (doubled, as 2 U h_s: :func:`_tanh_sum_scores`).
    ``hidden_size`` defaults to query_size.
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int | None = None) -> None:
        self.check(query_size, key_size, hidden_size)
        super().__init__(query_size, key_size)
        self.hidden_size = hidden_size or query_size
        self.W = nn.Linear(query_size, self.hidden_size, bias=False)
        self.U = nn.Linear(key_size, self.hidden_size, bias=False)
        self.v = nn.Linear(self.hidden_size, 1, bias=False)

    def prepare(self, keys: Tensor) -> Tensor:
        return F.linear(keys, 2 * self.U.weight)  # 2 U h_s: (B, S, H)

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return _tanh_sum_scores(self.W(query), prepared, self._head, self.hidden_size)


class MLPScorer(Scorer):
    """Concat score through a multi-layer perceptron.

    score(h_t, h_s) = w^T f_n(... f_2(tanh(W_1 [h_t; h_s] + b_1))), f_i(x) = tanh(W_i x + b_i),
    with one layer per entry of ``hidden_sizes``. As in ConcatScorer the first layer is split,
    W_1 = [W_q W_k], so W_k h_s + b_1 is prepared once per batch (doubled, as
    :func:`_tanh_sum_scores` takes it); the first tanh layer is computed as that function says,
    the later ones with torch's tanh.
    """

    def __init__(
        self, query_size: int, key_size: int, hidden_sizes: Sequence[int] = (128, 128)
    ) -> None:
        self.check(query_size, key_size, hidden_sizes)
        super().__init__(query_size, key_size)
        sizes = list(hidden_sizes)
        self.first = nn.Linear(query_size + key_size, sizes[0])
        self.hidden = nn.Sequential(
            *(
                layer
                for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
                for layer in (nn.Linear(n_in, n_out), nn.Tanh())
            )
        )
        self.out = nn.Linear(sizes[-1], 1, bias=False)
        self.width = max(sizes)

    @classmethod
    def check(
        cls, query_size: int, key_size: int, hidden_sizes: Sequence[int] = (128, 128)
    ) -> None:
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes={list(hidden_sizes)}: give one or more positive sizes")

    def prepare(self, keys: Tensor) -> Tensor:
        return F.linear(keys, 2 * self.first.weight[:, self.query_size :], 2 * self.first.bias)

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        query_part = F.linear(query, self.first.weight[:, : self.query_size])  # (B, T, H_1)
        return _tanh_sum_scores(query_part, prepared, self._head, self.width)

    def _head(self, hidden: Tensor, halves: bool) -> Tensor:
        first, *rest = [*self.hidden, self.out]
        hidden = _after_tanh(cast(nn.Linear, first), hidden, halves)
        for layer in rest:
            hidden = layer(hidden)
        return hidden.squeeze(-1)

    def flops(self) -> TokenCosts:
        first = self.first.out_features
        layers = [m for m in self.hidden.modules() if isinstance(m, nn.Linear)] + [self.out]
        return TokenCosts(
            source=2 * self.key_size * first,
            target=2 * self.query_size * first,
            pair=sum(2 * m.in_features * m.out_features for m in layers),
        )


class LocationScorer(Scorer):
    """Luong et al. (2015) location score: a_t = softmax(W_a h_t).

    W_a has one row per source position up to ``max_source_length``; the scores are
    (W_a h_t)[..., :S] and the attention's masked softmax restricts them to the real source
    length.
    """

    def __init__(self, query_size: int, key_size: int, max_source_length: int = 256) -> None:
        self.check(query_size, key_size, max_source_length)
        super().__init__(query_size, key_size)
        self.max_source_length = max_source_length
        self.W_a = nn.Linear(query_size, max_source_length, bias=False)

    @classmethod
    def check(cls, query_size: int, key_size: int, max_source_length: int = 256) -> None:
        if max_source_length < 1:
            raise ValueError(f"max_source_length={max_source_length}: must be a positive number")

    def prepare(self, keys: Tensor) -> Tensor:  # keys: only their length S is used
        if keys.size(1) > self.max_source_length:
            raise ValueError(
                f"LocationScorer has max_source_length={self.max_source_length} but the batch has "
                f"source length {keys.size(1)}; raise max_source_length or filter long sentences"
            )
        return keys

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return F.linear(query, self.W_a.weight[: prepared.size(1)])  # (B, T, S)

    def flops(self) -> TokenCosts:
        return TokenCosts(source=0, target=0, pair=2 * self.query_size)
