"""Greedy and beam search over the ``Seq2Seq.encode`` / ``Seq2Seq.step`` API (which
``Ensemble`` shares).

Each sentence of n source tokens may emit at most floor(a * n + b) tokens before EOS; at that
length EOS is forced (and scored with its real log-probability), so every hypothesis ends in EOS.
Two optional bans give a token log-probability -inf before ranking (the others keep theirs, not
renormalised, as in fairseq and OpenNMT-py): EOS before floor(min_length_a * n) output tokens
(the maximum wins where the two meet), and, with no_repeat_ngram_size = m > 0, any token that
would complete an m-gram the hypothesis already holds (fairseq's ``no_repeat_ngram_size``).

Beam search keeps B * K rows (sentences x beams) in one batch and ranks finished hypotheses by

    s(Y, X) = log p(Y | X) / lp(Y) + cp(X; Y)

with the GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al., 2016; alpha = 0 ranks by
the raw log-probability) or the average lp(Y) = |Y|, |Y| counting the output tokens including
EOS, and the GNMT coverage penalty cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1)), where p_ij
is the attention of output step j (EOS included) on source piece i (beta = 0: none).

A sentence leaves the beam once no live beam can still beat its n best finished hypotheses,
which makes the search exact under its maximum length; under a length penalty a live beam is
only bounded at that length, so it often searches on to it. ``early_stop`` ends a sentence as
soon as its best extension is EOS and it has ``n_best`` finished hypotheses (OpenNMT-py's rule):
under a length penalty that is sooner and not exact. (Under GNMT alpha = 0 with no coverage
penalty and ``n_best`` = 1 the exact stop ends the sentence at that step too.)

On a CPU a single model's output layer can run through a prepared copy
(:mod:`seq2attn.shortlist`): padded to a width that multiplies faster where it has outputs to pad,
or, where ``decoding.output_precision`` says bf16, a bf16 shortlist that fp32 scores again; the
tokens stay those of the layer itself, but for logits that tie within rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar, cast, runtime_checkable

import torch
from torch import Tensor, nn

from seq2attn.shortlist import (
    Bf16Shortlist,
    PaddedOutput,
    exact_top_logits,
    prepared,
    process_choice,
)

if TYPE_CHECKING:
    from seq2attn.config import DecodingSchema

Length = TypeVar("Length", float, Tensor)
LengthPenaltyKind = Literal["gnmt", "avg"]
Bans = tuple[Tensor, Tensor]  # (rows, tokens) whose next-token log-probability is -inf
OutputLayer = PaddedOutput | Bf16Shortlist


class Rows(Protocol):
    """A batch-major structure (encoder memory, decoder state) whose rows can be selected."""

    def index_select(self, index: Tensor) -> Self: ...


class Decodable(Protocol):
    """What the searches need of a model: ``Seq2Seq`` and ``Ensemble`` have it."""

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Any, Any]: ...

    def step(self, prev_tokens: Tensor, state: Any, memory: Any) -> tuple[Tensor, Any, Any]: ...


@runtime_checkable
class FeatureDecodable(Decodable, Protocol):
    """A model whose step can stop before its output layer (``Seq2Seq``; not ``Ensemble``,
    which averages whole distributions), so that a prepared output layer can take over."""

    output_layer: nn.Linear

    def step_features(
        self, prev_tokens: Tensor, state: Any, memory: Any
    ) -> tuple[Tensor, Any, Any]: ...


@dataclass
class Hypothesis:
    """tokens without BOS/EOS; score = sum of log-probs including EOS; attention (len + 1, S_i)."""

    tokens: list[int]
    score: float
    attention: Tensor | None


def gnmt_length_penalty(length: Length, alpha: float) -> Length:
    """lp(Y) = ((5 + |Y|) / 6)^alpha."""
    return ((5 + length) / 6) ** alpha


def gnmt_coverage_penalty(attention: Tensor, beta: float) -> float:
    """cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1)) of attention p (|Y|, S) over the real
    source pieces; 0 when every piece got a total attention of 1 or more, else negative."""
    return beta * float(attention.float().sum(dim=0).clamp(max=1.0).log().sum())


@dataclass(frozen=True)
class Ranking:
    """The key finished hypotheses are ranked by: s(Y, X) = log p(Y | X) / lp(Y) + cp(X; Y)."""

    alpha: float = 0.0
    length_penalty: LengthPenaltyKind = "gnmt"
    beta: float = 0.0

    def lp(self, length: int) -> float:
        """lp(Y) for |Y| = length: GNMT's, or |Y| itself for ``avg``."""
        if self.length_penalty == "avg":
            return float(length)
        return gnmt_length_penalty(length, self.alpha)

    def key(self, hypothesis: Hypothesis) -> float:
        """s(Y, X) of a finished hypothesis."""
        key = hypothesis.score / self.lp(len(hypothesis.tokens) + 1)
        if self.beta:
            if hypothesis.attention is None:
                raise ValueError(
                    f"decoding.coverage_penalty={self.beta} needs attention weights, and this "
                    "model gives none (attention=none): set decoding.coverage_penalty=0"
                )
            key += gnmt_coverage_penalty(hypothesis.attention, self.beta)
        return key

    def bound(self, best_live: float, max_length: int) -> float:
        """The highest key a live beam of raw score best_live can still reach: its raw score
        only falls, lp grows with length up to lp(max_length + 1), and cp <= 0."""
        return best_live / self.lp(max_length + 1)


def ranking_of(decoding: DecodingSchema) -> Ranking:
    """The key ``decoding`` ranks finished hypotheses by; greedy's is log p(Y | X) itself."""
    if decoding.strategy == "greedy":
        return Ranking()
    penalty = cast(LengthPenaltyKind, decoding.length_penalty_type)
    return Ranking(decoding.length_penalty, penalty, decoding.coverage_penalty)


def _length_bounds(src_lengths: Tensor, a: float, b: int) -> Tensor:
    return (src_lengths.double() * a + b).floor().long()  # (B,)


def _bans(history: Tensor, short: Tensor, ngram_size: int, eos_id: int) -> Bans:
    """The tokens banned at the next step of rows that emitted ``history`` (N, t): EOS in rows
    still ``short`` (N,) of their minimum length and, with ngram_size = m > 0, each token that
    followed an earlier occurrence of the row's last m - 1 tokens (it would repeat an m-gram).
    Live rows hold no EOS, so the m-gram rule never bans it."""
    rows = short.nonzero().squeeze(1)
    tokens = torch.full_like(rows, eos_id)
    m, t = ngram_size, history.size(1)
    if 0 < m <= t:
        ngrams = history.unfold(1, m, 1)  # (N, t - m + 1, m)
        suffix = history[:, t - m + 1 :].unsqueeze(1)  # (N, 1, m - 1)
        repeat_rows, starts = (ngrams[..., :-1] == suffix).all(dim=-1).nonzero(as_tuple=True)
        rows = torch.cat([rows, repeat_rows])
        tokens = torch.cat([tokens, ngrams[repeat_rows, starts, -1]])
    return rows, tokens


def _top_k_step(
    model: Decodable,
    tokens: Tensor,
    state: Rows,
    memory: Rows,
    force_eos: Tensor,
    eos_id: int,
    bans: Bans | None,
    k: int,
    output_layer: OutputLayer | None,
) -> tuple[Tensor, Tensor, Rows, Tensor | None]:
    """The k most likely next tokens of each row (N, k) with their log-probabilities (N, k),
    best first, the ``bans`` at -inf; where force_eos (N,) is True only EOS, the other k - 1 at
    -inf.

    The K best extensions of K beams lie among each beam's k = K best tokens, so beam search
    ranks K * K candidates per sentence instead of K * V, and greedy (k = 1) takes the argmax of
    the logits. Log-probs are the top logits minus one logsumexp per row; the vocabulary is never
    normalised as a whole. With an ``output_layer`` prepared for a :class:`FeatureDecodable`
    model, the step's output layer runs through it (:mod:`seq2attn.shortlist`).
    """
    if output_layer is None:
        logits, state, attention = model.step(tokens, state, memory)
        top = exact_top_logits(logits, k, bans, eos_id)
    else:
        features, state, attention = cast(FeatureDecodable, model).step_features(
            tokens, state, memory
        )
        top = output_layer.top_logits(features, k, bans, eos_id)
    top_tokens, log_probs = top.tokens, top.logits - top.normaliser
    if bool(force_eos.any()):
        forced = force_eos.unsqueeze(1)
        eos_only = torch.full_like(log_probs, float("-inf"))
        eos_only[:, 0] = top.eos - top.normaliser[:, 0]
        log_probs = torch.where(forced, eos_only, log_probs)
        top_tokens = top_tokens.masked_fill(forced, eos_id)
    return top_tokens, log_probs, state, attention


def _hypothesis(
    tokens: Tensor, score: Tensor, attention: Tensor | None, src_length: int, eos_id: int
) -> Hypothesis:
    """Hypothesis from output tokens (T,) that contain an EOS, and attention (T, S)."""
    length = int((tokens == eos_id).nonzero()[0])
    return Hypothesis(
        tokens=tokens[:length].tolist(),
        score=float(score),
        attention=None if attention is None else attention[: length + 1, :src_length],
    )


@torch.no_grad()
def greedy_decode(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    max_length_a: float = 1.5,
    max_length_b: int = 10,
    min_length_a: float = 0.0,
    no_repeat_ngram_size: int = 0,
    output_layer: OutputLayer | None = None,
) -> list[Hypothesis]:
    """Batched greedy decoding of src (B, S).

    Sentences that have emitted EOS leave the batch (their rows of the state and the memory are
    dropped), so each step computes only the sentences still being written.
    """
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    max_lengths = _length_bounds(src_lengths, max_length_a, max_length_b).to(src.device)
    min_lengths = _length_bounds(src_lengths, min_length_a, 0).to(src.device)
    banning = min_length_a > 0 or no_repeat_ngram_size > 0
    steps = int(max_lengths.max()) + 1
    output = src.new_full((batch, steps), eos_id)
    attention: Tensor | None = None
    scores = torch.zeros(batch, device=src.device)
    live = torch.arange(batch, device=src.device)  # sentence of each remaining row
    tokens = src.new_full((batch,), bos_id)
    for t in range(steps):
        bans = (
            _bans(output[live, :t], t < min_lengths[live], no_repeat_ngram_size, eos_id)
            if banning
            else None
        )
        best, best_scores, state, step_attention = _top_k_step(
            model, tokens, state, memory, t >= max_lengths[live], eos_id, bans, 1, output_layer
        )
        tokens, step_scores = best[:, 0], best_scores[:, 0]
        scores[live] += step_scores
        output[live, t] = tokens
        if step_attention is not None:
            if attention is None:
                attention = step_attention.new_zeros(batch, steps, step_attention.size(-1))
            attention[live, t] = step_attention
        writing = tokens != eos_id
        if not writing.any():
            break
        if not writing.all():
            keep = writing.nonzero().squeeze(1)
            live, tokens = live[keep], tokens[keep]
            state, memory = state.index_select(keep), memory.index_select(keep)
    return [
        _hypothesis(
            output[i], scores[i], None if attention is None else attention[i], length, eos_id
        )
        for i, length in enumerate(src_lengths.tolist())
    ]


@dataclass
class _Beams:
    """Live beams: scores (B, K) raw log-prob sums (-inf when dead), tokens (B * K, t) emitted
    so far, attention (B * K, t, S) or None."""

    scores: Tensor
    tokens: Tensor
    attention: Tensor | None

    def extend(
        self, tokens: Tensor, log_probs: Tensor, attention: Tensor | None
    ) -> tuple[_Beams, Tensor]:
        """Keep the K best one-token extensions per sentence among each row's candidates
        ``tokens`` (B * K, k) with ``log_probs`` (B * K, k); also return their source rows."""
        batch, beam = self.scores.shape
        k = tokens.size(-1)
        candidates = (self.scores.view(-1, 1) + log_probs).view(batch, beam * k)
        scores, flat = candidates.topk(beam, dim=1)  # (B, K)
        offsets = torch.arange(batch, device=flat.device).unsqueeze(1) * beam
        rows = (flat // k + offsets).view(-1)  # (B * K,) previous row of each new beam
        chosen = tokens.view(batch, beam * k).gather(1, flat).view(-1, 1)
        tokens = torch.cat([self.tokens[rows], chosen], dim=1)
        if attention is not None:
            step = attention[rows].unsqueeze(1)  # (B * K, 1, S)
            attention = (
                step if self.attention is None else torch.cat([self.attention[rows], step], 1)
            )
        return _Beams(scores, tokens, attention), rows

    def select(self, sentences: Tensor, rows: Tensor) -> _Beams:
        """The beams of ``sentences`` (A,), whose rows are ``rows`` (A * K,)."""
        attention = None if self.attention is None else self.attention[rows]
        return _Beams(self.scores[sentences], self.tokens[rows], attention)


# a finished hypothesis with its ranking key, computed once
Ranked = tuple[float, Hypothesis]


def _collect_finished(
    beams: _Beams,
    finished: list[list[Ranked]],
    sentences: list[int],
    src_lengths: list[int],
    eos_id: int,
    ranking: Ranking,
) -> Tensor:
    """Move beams that just emitted EOS into ``finished`` (row b of the beams is sentence
    ``sentences[b]``); returns scores with them dead.

    A live beam (finite score) holds no EOS before its last token: the step that wrote one
    killed it. So a finished hypothesis is its row's tokens but the last, and the rows that
    ended this step are read in one batch rather than one at a time."""
    batch, beam = beams.scores.shape
    ended = (beams.tokens[:, -1] == eos_id).view(batch, beam) & beams.scores.isfinite()
    rows = ended.view(-1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return beams.scores
    tokens = beams.tokens[rows, :-1].tolist()
    scores = beams.scores.view(-1)[rows].tolist()
    attention = None if beams.attention is None else beams.attention[rows]  # (n, t, S)
    for n, row in enumerate(rows.tolist()):
        sentence = sentences[row // beam]
        weights = None if attention is None else attention[n, :, : src_lengths[sentence]]
        hypothesis = Hypothesis(tokens=tokens[n], score=scores[n], attention=weights)
        finished[sentence].append((ranking.key(hypothesis), hypothesis))
    return beams.scores.masked_fill(ended, float("-inf"))


def _is_done(
    finished: list[Ranked], best_live: float, max_length: int, ranking: Ranking, n_best: int
) -> bool:
    """True when n_best finished hypotheses beat anything the live beams can still reach."""
    if len(finished) < n_best:
        return False
    nth_best = sorted((key for key, _ in finished), reverse=True)[n_best - 1]
    return nth_best >= ranking.bound(best_live, max_length)


@torch.no_grad()
def beam_search(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int,
    length_penalty: float = 0.0,
    n_best: int = 1,
    max_length_a: float = 1.5,
    max_length_b: int = 10,
    length_penalty_type: LengthPenaltyKind = "gnmt",
    coverage_penalty: float = 0.0,
    min_length_a: float = 0.0,
    no_repeat_ngram_size: int = 0,
    early_stop: bool = False,
    output_layer: OutputLayer | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for src (B, S); the n_best hypotheses per sentence, best s(Y, X) first.

    ``length_penalty`` is the GNMT alpha (unused by ``length_penalty_type="avg"``) and
    ``coverage_penalty`` the beta. The encoder runs once and its memory is expanded to B * K
    rows; finished hypotheses are kept per sentence until none can be beaten, and a sentence
    that is done leaves the batch (its K rows of every tensor are dropped).
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got n_best={n_best}")
    ranking = Ranking(length_penalty, length_penalty_type, coverage_penalty)
    batch, device = src.size(0), src.device
    memory, state = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(beam_size)  # (B * K,)
    memory, state = memory.index_select(rows), state.index_select(rows)
    max_lengths = _length_bounds(src_lengths, max_length_a, max_length_b).to(device)
    min_lengths = _length_bounds(src_lengths, min_length_a, 0).to(device)
    banning = min_length_a > 0 or no_repeat_ngram_size > 0
    lengths = src_lengths.tolist()
    scores = torch.full((batch, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # a single live beam at t = 0, so the K beams do not start as copies
    beams = _Beams(scores, src.new_empty(batch * beam_size, 0), None)
    tokens = src.new_full((batch * beam_size,), bos_id)
    finished: list[list[Ranked]] = [[] for _ in range(batch)]
    sentences = list(range(batch))  # the sentence of each row of the beams
    for t in range(int(max_lengths.max()) + 1):
        force_eos = (t >= max_lengths).repeat_interleave(beam_size)
        bans = (
            _bans(
                beams.tokens,
                (t < min_lengths).repeat_interleave(beam_size),
                no_repeat_ngram_size,
                eos_id,
            )
            if banning
            else None
        )
        candidates, log_probs, state, attention = _top_k_step(
            model, tokens, state, memory, force_eos, eos_id, bans, beam_size, output_layer
        )
        beams, reorder = beams.extend(candidates, log_probs, attention)
        state, tokens = state.index_select(reorder), beams.tokens[:, -1]
        # beam 0 holds each sentence's best extension (extend ranks them)
        best_ended = (tokens[::beam_size] == eos_id).tolist() if early_stop else None
        beams.scores = _collect_finished(beams, finished, sentences, lengths, eos_id, ranking)
        best_live = beams.scores.max(dim=1).values.tolist()
        going = [
            b
            for b, (sentence, live, limit) in enumerate(
                zip(sentences, best_live, max_lengths.tolist(), strict=True)
            )
            if not (
                (best_ended is not None and best_ended[b] and len(finished[sentence]) >= n_best)
                or _is_done(finished[sentence], live, limit, ranking, n_best)
            )
        ]
        if not going:
            break
        if len(going) < len(sentences):
            keep = torch.tensor(going, device=device)
            kept_rows = keep.unsqueeze(1) * beam_size + torch.arange(beam_size, device=device)
            kept_rows = kept_rows.view(-1)
            beams = beams.select(keep, kept_rows)
            state, memory = state.index_select(kept_rows), memory.index_select(kept_rows)
            tokens, max_lengths, min_lengths = (
                tokens[kept_rows],
                max_lengths[keep],
                min_lengths[keep],
            )
            sentences = [sentences[b] for b in going]
    return [
        [h for _, h in sorted(ranked, key=lambda pair: pair[0], reverse=True)[:n_best]]
        for ranked in finished
    ]


def decode(
    model: Decodable,
    src: Tensor,
    src_lengths: Tensor,
    decoding: DecodingSchema,
    bos_id: int,
    eos_id: int,
) -> list[list[Hypothesis]]:
    """The n-best hypotheses of each sentence of src (B, S) under the configured search."""
    output_layer = _output_layer(model, decoding, src.device)
    if decoding.strategy == "greedy":
        hypotheses = greedy_decode(
            model,
            src,
            src_lengths,
            bos_id,
            eos_id,
            decoding.max_length_a,
            decoding.max_length_b,
            decoding.min_length_a,
            decoding.no_repeat_ngram_size,
            output_layer,
        )
        return [[hypothesis] for hypothesis in hypotheses]
    return beam_search(
        model,
        src,
        src_lengths,
        bos_id,
        eos_id,
        beam_size=decoding.beam_size,
        length_penalty=decoding.length_penalty,
        n_best=decoding.n_best,
        max_length_a=decoding.max_length_a,
        max_length_b=decoding.max_length_b,
        length_penalty_type=cast(LengthPenaltyKind, decoding.length_penalty_type),
        coverage_penalty=decoding.coverage_penalty,
        min_length_a=decoding.min_length_a,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
        early_stop=decoding.early_stop,
        output_layer=output_layer,
    )


def prepare(model: Decodable, decoding: DecodingSchema, device: torch.device) -> None:
    """Make what :func:`decode` keeps between calls (the prepared output layer, the ``auto``
    probe) once, before threads that search side by side would each make it."""
    _output_layer(model, decoding, device)


def _output_layer(
    model: Decodable, decoding: DecodingSchema, device: torch.device
) -> OutputLayer | None:
    """The model's output layer prepared for a CPU's search: its bf16 shortlist where
    ``decoding.output_precision`` asks for bf16 (``auto``: where
    :func:`~seq2attn.shortlist.process_choice` says so), else its padded copy where it has
    outputs to pad. None (the model's own step) for a model without ``step_features`` (an
    ensemble), and off a CPU: a GPU may reduce bf16 products in bf16, beyond the shortlist's
    bound, and the padding's speed was measured on CPUs only."""
    if device.type != "cpu" or not isinstance(model, FeatureDecodable):
        return None
    precision = decoding.output_precision.value
    if precision == "auto":
        precision = process_choice()
    if precision == "bf16":
        return prepared(Bf16Shortlist, model.output_layer)
    if PaddedOutput.pays(model.output_layer):
        return prepared(PaddedOutput, model.output_layer)
    return None
