"""Greedy and beam search: beam 1 equals greedy, n-best order, batch invariance, EOS, length;
the optional bans (minimum length, repeated n-grams) and ranking terms (avg length penalty,
coverage penalty)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from seq2attn import search
from seq2attn.config import ConfigError, DecodingSchema
from seq2attn.config.run import LengthPenaltyType, SearchStrategy
from seq2attn.ensemble import Ensemble
from seq2attn.inference.translator import Translator
from seq2attn.models.decoders import DecoderState, Memory
from seq2attn.models.scorers import AdditiveScorer, DotScorer, GeneralScorer
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.search import (
    LengthPenaltyKind,
    Ranking,
    beam_search,
    decode,
    gnmt_coverage_penalty,
    gnmt_length_penalty,
    greedy_decode,
)
from seq2attn.shortlist import PaddedOutput, prepared

PAD, BOS, EOS = 0, 2, 3
V = 9
WIRINGS = {
    "none": ("none", DotScorer, False),
    "bahdanau": ("bahdanau", AdditiveScorer, False),
    "luong_feed": ("luong", GeneralScorer, True),
}
SRC = torch.tensor([[4, 5, 6, 7, 8], [6, 7, 4, PAD, PAD], [5, PAD, PAD, PAD, PAD]])
LENGTHS = torch.tensor([5, 3, 1])
LIMIT = {"max_length_a": 1.0, "max_length_b": 3}  # few steps keep the tests fast


def make_model(wiring: str = "luong_feed", cell: str = "lstm") -> Seq2Seq:
    torch.manual_seed(0)
    attention, scorer, input_feeding = WIRINGS[wiring]
    model = Seq2Seq(
        src_vocab_size=V,
        tgt_vocab_size=V,
        cell=cell,
        attention=attention,
        scorer=scorer,
        input_feeding=input_feeding,
        embedding_size=4,
        hidden_size=6,
        encoder_hidden_size=None,
        encoder_layers=1,
        decoder_layers=2,
        bidirectional=True,
        dropout=0.1,
        bridge="linear",
        tie_embeddings=False,
        reverse_source=False,
        pad_id=PAD,
    )
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)  # peaked, source-dependent distributions
        model.output_layer.bias[EOS] = 1.0  # some sentences end early, some at the limit
    return model.eval()


def normalised(score: float, tokens: list[int], alpha: float) -> float:
    return score / ((5 + len(tokens) + 1) / 6) ** alpha


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_beam_one_equals_greedy(wiring: str) -> None:
    model = make_model(wiring)
    greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT)
    beam = [nbest[0] for nbest in beam_search(model, SRC, LENGTHS, BOS, EOS, 1, **LIMIT)]
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    # greedy drops finished sentences from its batch, so its matrix products see other shapes:
    # equal up to float32 rounding, not to the bit (seen on an AMD EPYC: 5e-7 apart)
    assert [h.score for h in beam] == pytest.approx([h.score for h in greedy], abs=1e-5)
    for b, g, n in zip(beam, greedy, LENGTHS.tolist(), strict=True):
        if g.attention is None:
            assert b.attention is None
        else:
            assert g.attention.shape == (len(g.tokens) + 1, n)
            torch.testing.assert_close(b.attention, g.attention)


def test_greedy_score_is_the_sum_of_log_probs_of_the_chosen_tokens() -> None:
    model = make_model()
    hyp = greedy_decode(model, SRC[1:2, :3], LENGTHS[1:2], BOS, EOS)[0]
    memory, state = model.encode(SRC[1:2, :3], LENGTHS[1:2])
    total, prev = 0.0, BOS
    for token in [*hyp.tokens, EOS]:
        logits, state, _ = model.step(torch.tensor([prev]), state, memory)
        total += logits.log_softmax(-1)[0, token].item()
        prev = token
    assert hyp.score == pytest.approx(total, abs=1e-5)


@pytest.mark.parametrize(
    "options",
    [{}, {"min_length_a": 5.0}, {"no_repeat_ngram_size": 1}, {"early_stop": True}],
    ids=["plain", "eos_forced_past_the_minimum", "blocking_every_repeat", "early_stop"],
)
def test_every_beam_hypothesis_is_its_own_forced_decode(options: dict[str, Any]) -> None:
    """Each n-best hypothesis, read back from the finished beams, holds its tokens without EOS,
    their log-probability sum with EOS, and the attention of each of those steps over its own
    source pieces, as stepping the model through them gives."""
    model = make_model()
    results = beam_search(model, SRC, LENGTHS, BOS, EOS, 4, 0.0, 3, **LIMIT, **options)
    for sentence, nbest in enumerate(results):
        length = int(LENGTHS[sentence])
        src = SRC[sentence : sentence + 1, :length]
        for hyp in nbest:
            assert EOS not in hyp.tokens
            memory, state = model.encode(src, LENGTHS[sentence : sentence + 1])
            total, prev, weights = 0.0, BOS, []
            for token in [*hyp.tokens, EOS]:
                logits, state, attention = model.step(torch.tensor([prev]), state, memory)
                total += logits.log_softmax(-1)[0, token].item()
                weights.append(attention[0])
                prev = token
            assert hyp.score == pytest.approx(total, abs=1e-5)
            assert hyp.attention is not None
            torch.testing.assert_close(hyp.attention, torch.stack(weights), atol=1e-5, rtol=0)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_n_best_is_sorted_by_normalised_score(alpha: float) -> None:
    model = make_model()
    results = beam_search(model, SRC, LENGTHS, BOS, EOS, 4, alpha, 3, **LIMIT)
    for nbest in results:
        assert len(nbest) == 3
        keys = [normalised(h.score, h.tokens, alpha) for h in nbest]
        assert keys == sorted(keys, reverse=True)
        assert len({tuple(h.tokens) for h in nbest}) == 3


def test_wider_beam_never_scores_worse_than_greedy() -> None:
    model = make_model()
    greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT)
    beam = beam_search(model, SRC, LENGTHS, BOS, EOS, 4, **LIMIT)
    for g, nbest in zip(greedy, beam, strict=True):
        assert nbest[0].score >= g.score - 1e-6


@pytest.mark.parametrize("beam_size", [None, 1, 3])
def test_sentence_decodes_the_same_alone_as_in_a_batch(beam_size: int | None) -> None:
    model = make_model()

    def decode(src: torch.Tensor, lengths: torch.Tensor) -> list:
        if beam_size is None:
            return greedy_decode(model, src, lengths, BOS, EOS, **LIMIT)
        return [
            h
            for nbest in beam_search(model, src, lengths, BOS, EOS, beam_size, 0.6, 1, **LIMIT)
            for h in nbest
        ]

    together = decode(SRC, LENGTHS)
    for i, n in enumerate(LENGTHS.tolist()):
        alone = decode(SRC[i : i + 1, :n], LENGTHS[i : i + 1])[0]
        assert alone.tokens == together[i].tokens
        assert alone.score == pytest.approx(together[i].score, abs=1e-5)
        torch.testing.assert_close(alone.attention, together[i].attention)


def test_decoding_stops_at_eos() -> None:
    model = make_model()
    with torch.no_grad():
        model.output_layer.bias[EOS] = 100.0
    calls = []
    step = model.step
    model.step = lambda *args: calls.append(1) or step(*args)  # type: ignore[method-assign]
    for hyp, n in zip(greedy_decode(model, SRC, LENGTHS, BOS, EOS), LENGTHS.tolist(), strict=True):
        assert hyp.tokens == [] and hyp.attention.shape == (1, n)
        assert hyp.score == pytest.approx(0.0, abs=1e-6)
    assert len(calls) == 1
    for nbest in beam_search(model, SRC, LENGTHS, BOS, EOS, beam_size=3, n_best=2):
        assert nbest[0].tokens == [] and nbest[0].score == pytest.approx(0.0, abs=1e-6)
    assert len(calls) == 3  # beam: the best is finished and unbeatable after two steps


def test_length_limit_forces_eos() -> None:
    model = make_model()
    with torch.no_grad():
        model.output_layer.bias[EOS] = -100.0
    greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, max_length_a=1.0, max_length_b=2)
    beam = beam_search(model, SRC, LENGTHS, BOS, EOS, 2, max_length_a=1.0, max_length_b=2)
    for g, nbest, n in zip(greedy, beam, LENGTHS.tolist(), strict=True):
        assert len(g.tokens) == len(nbest[0].tokens) == n + 2
        assert EOS not in g.tokens and g.score < -100
        assert g.attention.shape == (n + 3, n)


def test_greedy_steps_only_the_sentences_still_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    with torch.no_grad():
        model.output_layer.bias[EOS] = -100.0  # every sentence runs to its own length limit
    rows, step = [], model.step

    def counting_step(tokens, state, memory):
        rows.append(tokens.size(0))
        return step(tokens, state, memory)

    monkeypatch.setattr(model, "step", counting_step)
    greedy_decode(model, SRC, LENGTHS, BOS, EOS, max_length_a=1.0, max_length_b=2)
    # limits 7, 5 and 3 tokens + EOS: all three rows, then two, then the longest alone
    assert rows == [3] * 4 + [2] * 2 + [1] * 2


def test_gnmt_length_penalty_formula() -> None:
    assert gnmt_length_penalty(3, 0.6) == pytest.approx((8 / 6) ** 0.6)
    assert gnmt_length_penalty(1, 0.0) == 1.0
    assert gnmt_length_penalty(7, 1.0) == 2.0


def test_n_best_larger_than_beam_is_refused() -> None:
    with pytest.raises(ValueError, match="n_best=3"):
        beam_search(make_model(), SRC, LENGTHS, BOS, EOS, beam_size=2, n_best=3)


class TableModel:
    """A model whose next-token distribution depends only on the previous token."""

    A, B = 4, 5
    PROBS = {
        BOS: {4: 0.6, 5: 0.4},
        4: {EOS: 0.4, 4: 0.25, 5: 0.35},
        5: {EOS: 0.9, 4: 0.05, 5: 0.05},
    }

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Memory, DecoderState]:
        batch, length = src.shape
        keys = torch.zeros(batch, length, 1)
        pad = torch.arange(length).unsqueeze(0) >= src_lengths.unsqueeze(1)
        return Memory(keys, None, pad, keys[:, 0]), DecoderState(torch.zeros(1, batch, 1))

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        table = torch.full((V, V), 1e-9)
        for previous, row in self.PROBS.items():
            for token, p in row.items():
                table[previous, token] = p
        return table[prev].log(), state, None


def test_beam_finds_the_better_hypothesis_greedy_misses() -> None:
    """BOS -> a (0.6) -> EOS (0.4) = 0.24 greedily, but BOS -> b (0.4) -> EOS (0.9) = 0.36."""
    model, src, lengths = TableModel(), torch.tensor([[4, 4]]), torch.tensor([2])
    greedy = greedy_decode(model, src, lengths, BOS, EOS)[0]  # type: ignore[arg-type]
    assert greedy.tokens == [TableModel.A] and greedy.score == pytest.approx(math.log(0.24))
    nbest = beam_search(model, src, lengths, BOS, EOS, 2, n_best=2)[0]  # type: ignore[arg-type]
    assert [h.tokens for h in nbest] == [[TableModel.B], [TableModel.A]]
    assert [h.score for h in nbest] == pytest.approx([math.log(0.36), math.log(0.24)])


def test_length_penalty_prefers_longer_hypotheses_by_the_formula() -> None:
    """At most two tokens before EOS. [a, b]: 0.6 * 0.35 * 0.9 = 0.189 against [b]: 0.36;
    alpha = 5 flips the order: log(0.189) / (8/6)^5 = -0.395 > log(0.36) / (7/6)^5 = -0.473.
    After two steps [b] is finished but the live [a, b] may still beat it, so search goes on."""
    model, src, lengths = TableModel(), torch.tensor([[4, 4]]), torch.tensor([2])

    def best(alpha: float):
        return beam_search(
            model,  # type: ignore[arg-type]
            src,
            lengths,
            BOS,
            EOS,
            beam_size=3,
            length_penalty=alpha,
            max_length_a=0.0,
            max_length_b=2,
        )[0][0]

    assert best(0.0).tokens == [TableModel.B]
    penalised = best(5.0)
    assert penalised.tokens == [TableModel.A, TableModel.B]
    assert penalised.score == pytest.approx(math.log(0.189))
    assert normalised(penalised.score, penalised.tokens, 5.0) == pytest.approx(-0.395, abs=1e-3)


def test_beam_steps_only_the_sentences_still_searching(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    with torch.no_grad():
        model.output_layer.bias[EOS] = -100.0  # every sentence runs to its own length limit
    rows, step = [], model.step

    def counting_step(tokens, state, memory):
        rows.append(tokens.size(0))
        return step(tokens, state, memory)

    monkeypatch.setattr(model, "step", counting_step)
    beam_search(model, SRC, LENGTHS, BOS, EOS, 2, max_length_a=1.0, max_length_b=2)
    # limits 7, 5 and 3 tokens + EOS; a sentence whose beams all ended leaves with its 2 rows
    assert rows == [6] * 4 + [4] * 2 + [2] * 2


@pytest.mark.parametrize("beam_size", [2, 4])
@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_beam_over_top_k_tokens_equals_beam_over_the_whole_vocabulary(
    monkeypatch: pytest.MonkeyPatch, wiring: str, beam_size: int
) -> None:
    """Ranking each beam's K best tokens finds the same beams as ranking all V tokens."""
    model = make_model(wiring)
    options = {"n_best": beam_size, "length_penalty": 0.6, **LIMIT}
    pruned = beam_search(model, SRC, LENGTHS, BOS, EOS, beam_size, **options)
    top_k_step = search._top_k_step
    monkeypatch.setattr(
        search, "_top_k_step", lambda *args: top_k_step(*args[:-2], V, args[-1])
    )  # every token a candidate: the full K * V ranking
    full = beam_search(model, SRC, LENGTHS, BOS, EOS, beam_size, **options)
    assert [[h.tokens for h in s] for s in pruned] == [[h.tokens for h in s] for s in full]
    for sentence_pruned, sentence_full in zip(pruned, full, strict=True):
        for a, b in zip(sentence_pruned, sentence_full, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert a.attention is None or torch.allclose(a.attention, b.attention)


def test_greedy_takes_the_argmax_of_the_log_softmax() -> None:
    """The argmax of the logits with logit - logsumexp as its score is the argmax of the
    log-softmax with its value, at every step of a real model."""
    model = make_model("bahdanau", "gru").requires_grad_(False)
    hypotheses = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT)
    memory, state = model.encode(SRC, LENGTHS)
    for i, hypothesis in enumerate(hypotheses):
        rows = torch.tensor([i])
        row_memory, row_state = memory.index_select(rows), state.index_select(rows)
        tokens, total = torch.tensor([BOS]), 0.0
        for expected in [*hypothesis.tokens, EOS]:
            logits, row_state, _ = model.step(tokens, row_state, row_memory)
            log_probs = logits.log_softmax(dim=-1)[0]
            if len(hypothesis.tokens) + 1 < int(LENGTHS[i]) + 3 or expected != EOS:
                assert int(log_probs.argmax()) == expected
            total += float(log_probs[expected])
            tokens = torch.tensor([expected])
        assert hypothesis.score == pytest.approx(total, abs=1e-5)


def has_repeated_ngram(tokens: list[int], n: int) -> bool:
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(ngrams)) < len(ngrams)


class StepTableModel(TableModel):
    """A model whose next-token distribution depends on the step t (held in the state) and the
    previous token; (t, token) pairs not in STEPS get 1e-9 everywhere."""

    C = 6
    # the likeliest output, a b a b, repeats the bigram "a b"; the way around it is a b a c
    STEPS = {
        (0, BOS): {TableModel.A: 1.0},
        (1, TableModel.A): {TableModel.B: 1.0},
        (2, TableModel.B): {TableModel.A: 1.0},
        (3, TableModel.A): {TableModel.B: 0.6, C: 0.4},
        (4, TableModel.B): {EOS: 1.0},
        (4, C): {EOS: 1.0},
    }

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        table = torch.full((prev.size(0), V), 1e-9)
        for row, (t, previous) in enumerate(
            zip(state.hidden[0, :, 0].tolist(), prev.tolist(), strict=True)
        ):
            for token, p in self.STEPS.get((int(t), previous), {}).items():
                table[row, token] = p
        return table.log(), DecoderState(state.hidden + 1), None


def test_repeat_blocking_takes_the_way_around_a_repeated_bigram() -> None:
    """a b a b (0.6) repeats "a b"; with bigrams blocked, b after a b a is banned and a b a c
    (0.4) is the best output of greedy and beam alike. Blocking trigrams changes nothing."""
    model: Any = StepTableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    a, b, c = TableModel.A, TableModel.B, StepTableModel.C
    for size, expected, p in (
        (0, [a, b, a, b], 0.6),
        (2, [a, b, a, c], 0.4),
        (3, [a, b, a, b], 0.6),
    ):
        options = {"no_repeat_ngram_size": size}
        greedy = greedy_decode(model, src, lengths, BOS, EOS, **options)[0]
        beam = beam_search(model, src, lengths, BOS, EOS, 2, **options)[0][0]
        for hypothesis in (greedy, beam):
            assert hypothesis.tokens == expected
            assert hypothesis.score == pytest.approx(math.log(p), abs=1e-6)
    assert has_repeated_ngram([a, b, a, b], 2) and not has_repeated_ngram([a, b, a, c], 2)


class LoopTableModel(TableModel):
    """After a, a again (0.9) rather than EOS (0.1)."""

    PROBS = {BOS: {TableModel.A: 0.9, EOS: 0.1}, TableModel.A: {TableModel.A: 0.9, EOS: 0.1}}


def test_repeat_blocking_never_bans_eos() -> None:
    """With every emitted token banned (size 1), a is banned after a and EOS is what is left."""
    model: Any = LoopTableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    a = TableModel.A
    looping = greedy_decode(model, src, lengths, BOS, EOS)[0]
    assert looping.tokens == [a] * 13  # floor(1.5 * 2 + 10) tokens, then EOS forced
    greedy = greedy_decode(model, src, lengths, BOS, EOS, no_repeat_ngram_size=1)[0]
    assert greedy.tokens == [a] and greedy.score == pytest.approx(math.log(0.09))
    nbest = beam_search(model, src, lengths, BOS, EOS, 2, n_best=2, no_repeat_ngram_size=1)[0]
    assert [h.tokens for h in nbest] == [[], [a]]
    assert [h.score for h in nbest] == pytest.approx([math.log(0.1), math.log(0.09)])


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_blocked_outputs_hold_no_repeated_ngram(wiring: str) -> None:
    model = make_model(wiring)
    free = greedy_decode(model, SRC, LENGTHS, BOS, EOS, max_length_a=2.0, max_length_b=6)
    assert any(has_repeated_ngram(h.tokens, 2) for h in free)  # so the check below bites
    options = {"max_length_a": 2.0, "max_length_b": 6, "no_repeat_ngram_size": 2}
    greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **options)
    beam = beam_search(model, SRC, LENGTHS, BOS, EOS, 4, 0.6, 4, **options)
    for hypothesis in [*greedy, *(h for nbest in beam for h in nbest)]:
        assert not has_repeated_ngram(hypothesis.tokens, 2)
        assert math.isfinite(hypothesis.score)


def test_min_length_bans_eos_before_it() -> None:
    """TableModel ends after one token ([a] greedily, [b] by beam). With at least
    floor(1.0 * 2) = 2 tokens: greedy a, then b (0.35: EOS is banned), then EOS (0.9);
    beam finds the same [a, b] (0.189), the best of the two-token outputs."""
    model: Any = TableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    a, b = TableModel.A, TableModel.B
    assert greedy_decode(model, src, lengths, BOS, EOS)[0].tokens == [a]
    assert beam_search(model, src, lengths, BOS, EOS, 2)[0][0].tokens == [b]
    greedy = greedy_decode(model, src, lengths, BOS, EOS, min_length_a=1.0)[0]
    nbest = beam_search(model, src, lengths, BOS, EOS, 2, n_best=2, min_length_a=1.0)[0]
    assert greedy.tokens == nbest[0].tokens == [a, b]
    assert greedy.score == nbest[0].score == pytest.approx(math.log(0.189))
    assert all(len(h.tokens) >= 2 for h in nbest)


@pytest.mark.parametrize("min_length_a", [1.0, 5.0])
def test_min_length_holds_up_to_the_maximum(min_length_a: float) -> None:
    """Every output has floor(min_length_a * n) tokens or more, except that EOS forced at the
    maximum length wins (5.0: every output is of the maximum length, n + 3)."""
    model = make_model()
    with torch.no_grad():
        model.output_layer.bias[EOS] = 100.0  # EOS first wherever it is allowed
    greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, min_length_a=min_length_a, **LIMIT)
    beam = beam_search(model, SRC, LENGTHS, BOS, EOS, 3, 0.6, 3, min_length_a=min_length_a, **LIMIT)
    for g, nbest, n in zip(greedy, beam, LENGTHS.tolist(), strict=True):
        shortest = min(math.floor(min_length_a * n), n + 3)
        assert len(g.tokens) == shortest
        assert all(len(h.tokens) == shortest for h in nbest)


class AvgTableModel(TableModel):
    """As TableModel, but b follows a more often (0.48): [a, b] = 0.6 * 0.48 * 0.9 = 0.2592."""

    PROBS = {**TableModel.PROBS, TableModel.A: {EOS: 0.4, TableModel.A: 0.12, TableModel.B: 0.48}}


def test_avg_length_penalty_ranks_by_score_per_token() -> None:
    """At most two tokens. [b] (0.36, |Y| = 2) against [a, b] (0.2592, |Y| = 3):
    GNMT alpha = 1: log(0.36) / (7/6) = -0.876 > log(0.2592) / (8/6) = -1.013, so [b];
    avg: log(0.36) / 2 = -0.511 < log(0.2592) / 3 = -0.450, so [a, b]."""
    model: Any = AvgTableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    a, b = TableModel.A, TableModel.B

    def nbest(alpha: float, kind: LengthPenaltyKind) -> list:
        return beam_search(
            model,
            src,
            lengths,
            BOS,
            EOS,
            beam_size=3,
            length_penalty=alpha,
            n_best=3,
            max_length_a=0.0,
            max_length_b=2,
            length_penalty_type=kind,
        )[0]

    assert nbest(0.0, "gnmt")[0].tokens == nbest(1.0, "gnmt")[0].tokens == [b]
    ranked = nbest(1.0, "avg")  # alpha is not used by avg
    assert [h.tokens for h in ranked] == [[a, b], [b], [a]]
    keys = [h.score / (len(h.tokens) + 1) for h in ranked]
    assert keys == pytest.approx(
        [math.log(0.2592) / 3, math.log(0.36) / 2, math.log(0.24) / 2], abs=1e-6
    )
    assert keys == sorted(keys, reverse=True)
    assert [Ranking(length_penalty="avg").key(h) for h in ranked] == keys


def test_early_stop_ends_a_sentence_when_its_best_beam_ends() -> None:
    """At most two tokens, beam 3, avg. After two steps the best extension is [b, EOS] (0.36),
    ahead of [a, b] (0.288) and [a, EOS] (0.24): early stop ends the sentence there with [b]
    (-0.511 per token), while the exact search goes on to [a, b, EOS] (-0.450), as above. Two
    sentences: each is decided by its own best beam, not by a row of the other's."""
    model: Any = AvgTableModel()
    src, lengths = torch.tensor([[4, 4], [4, 4]]), torch.tensor([2, 2])
    a, b = TableModel.A, TableModel.B
    decoding = {
        "strategy": SearchStrategy.beam,
        "beam_size": 3,
        "max_length_a": 0.0,
        "max_length_b": 2,
        "length_penalty_type": LengthPenaltyType.avg,
    }
    steps, step = [], model.step

    def counting_step(tokens, state, memory):
        steps.append(tokens.size(0))
        return step(tokens, state, memory)

    model.step = counting_step
    exact = decode(model, src, lengths, DecodingSchema(**decoding), BOS, EOS)
    assert [nbest[0].tokens for nbest in exact] == [[a, b], [a, b]] and len(steps) == 3
    steps.clear()
    early = decode(model, src, lengths, DecodingSchema(**decoding, early_stop=True), BOS, EOS)
    assert [nbest[0].tokens for nbest in early] == [[b], [b]] and len(steps) == 2
    assert [nbest[0].score for nbest in early] == pytest.approx([math.log(0.36)] * 2)


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_early_stop_without_a_length_penalty_finds_what_the_exact_search_finds(
    monkeypatch: pytest.MonkeyPatch, wiring: str
) -> None:
    """Ranked by the raw log-probability (alpha = 0), a best beam that ended beats every live
    beam, so the exact search stops at the same step with the same hypothesis. Under a length
    penalty early stop steps fewer rows and finds nothing the exact search ranks higher."""
    model = make_model(wiring)
    with torch.no_grad():  # sentences end at varied steps
        model.output_layer.bias[EOS] = {"bahdanau": 2.0, "luong_feed": 2.0, "none": 3.0}[wiring]
    rows, step = [], model.step

    def counting_step(tokens, state, memory):
        rows.append(tokens.size(0))
        return step(tokens, state, memory)

    monkeypatch.setattr(model, "step", counting_step)
    steps, best = {}, {}
    for alpha in (0.0, 1.0):
        for early in (False, True):
            rows.clear()
            found = beam_search(model, SRC, LENGTHS, BOS, EOS, 3, alpha, early_stop=early)
            steps[alpha, early], best[alpha, early] = sum(rows), [s[0] for s in found]
    exact, early = best[0.0, False], best[0.0, True]
    assert [h.tokens for h in early] == [h.tokens for h in exact]
    assert [h.score for h in early] == pytest.approx([h.score for h in exact])
    assert steps[0.0, True] == steps[0.0, False]
    assert steps[1.0, True] <= steps[1.0, False]
    if wiring != "bahdanau":  # its first sentence runs to the limit either way
        assert steps[1.0, True] < steps[1.0, False]
    ranking = Ranking(alpha=1.0)
    for exact_best, early_best in zip(best[1.0, False], best[1.0, True], strict=True):
        assert ranking.key(exact_best) >= ranking.key(early_best) - 1e-6


def test_early_stop_waits_for_n_best_finished_hypotheses() -> None:
    """Beam 2, n_best 2, avg, at most two tokens: the best extension after two steps is
    [b, EOS] (0.36), but it is the only finished hypothesis, so the search goes on to
    [a, b, EOS] (0.2592) and returns both, [a, b] first (-0.450 against -0.511 per token)."""
    model: Any = AvgTableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    a, b = TableModel.A, TableModel.B
    nbest = beam_search(
        model,
        src,
        lengths,
        BOS,
        EOS,
        beam_size=2,
        n_best=2,
        max_length_a=0.0,
        max_length_b=2,
        length_penalty_type="avg",
        early_stop=True,
    )[0]
    assert [h.tokens for h in nbest] == [[a, b], [b]]


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_early_stop_decides_each_sentence_by_its_own_best_beam(wiring: str) -> None:
    """Sentences that leave the batch early do not shift which beam is another sentence's
    best: each sentence decoded in the batch gets what it gets decoded alone."""
    model = make_model(wiring)
    with torch.no_grad():
        model.output_layer.bias[EOS] = 2.0
    options: dict[str, Any] = {"length_penalty": 1.0, "n_best": 2, "early_stop": True}
    batched = beam_search(model, SRC, LENGTHS, BOS, EOS, 3, **options)
    for i, length in enumerate(LENGTHS.tolist()):
        alone = beam_search(model, SRC[i : i + 1, :length], LENGTHS[i : i + 1], BOS, EOS, 3,
                            **options)[0]  # fmt: skip
        assert [h.tokens for h in batched[i]] == [h.tokens for h in alone]
        assert [h.score for h in batched[i]] == pytest.approx([h.score for h in alone], abs=1e-5)


def test_early_stop_is_refused_with_greedy() -> None:
    with pytest.raises(ConfigError, match=r"^decoding\.early_stop=true with decoding=greedy"):
        DecodingSchema(early_stop=True)


class AttendingTableModel(TableModel):
    """TableModel with attention over three source pieces that depends on the previous token:
    each of BOS, a and b attends mostly (0.8) to one piece."""

    ATTENTION = {
        BOS: [0.8, 0.1, 0.1],
        TableModel.A: [0.1, 0.8, 0.1],
        TableModel.B: [0.1, 0.1, 0.8],
    }

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        logits, state, _ = super().step(prev, state, memory)
        rows = torch.zeros(V, 3)
        for token, row in self.ATTENTION.items():
            rows[token] = torch.tensor(row)
        return logits, state, rows[prev]


def test_coverage_penalty_formula() -> None:
    """cp = beta * sum_i log(min(sum_j p_ij, 1)): column sums 1.1, 0.6 and 0.3."""
    attention = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    expected = 0.5 * (math.log(1.0) + math.log(0.6) + math.log(0.3))
    assert gnmt_coverage_penalty(attention, 0.5) == pytest.approx(expected, abs=1e-6)
    assert gnmt_coverage_penalty(attention, 0.0) == 0.0


def test_coverage_penalty_changes_the_winner() -> None:
    """At most two tokens. [b] (0.36) attends with BOS then b: coverage (0.9, 0.2, 0.9);
    [a, b] (0.189) attends with BOS, a and b: coverage (1, 1, 1), no penalty. Without the
    penalty [b] wins; with beta = 1, log(0.36) + log(0.9 * 0.2 * 0.9) = -2.842 loses to
    log(0.189) + 0 = -1.666."""
    model: Any = AttendingTableModel()
    src, lengths = torch.tensor([[4, 4, 4]]), torch.tensor([3])
    a, b = TableModel.A, TableModel.B

    def nbest(beta: float) -> list:
        return beam_search(
            model,
            src,
            lengths,
            BOS,
            EOS,
            beam_size=3,
            n_best=3,
            max_length_a=0.0,
            max_length_b=2,
            coverage_penalty=beta,
        )[0]

    assert nbest(0.0)[0].tokens == [b]
    ranked = nbest(1.0)
    assert [h.tokens for h in ranked] == [[a, b], [b], [a]]
    short = ranked[1]
    torch.testing.assert_close(short.attention, torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    by_hand = math.log(0.36) + math.log(0.9) + math.log(0.2) + math.log(0.9)
    assert Ranking(beta=1.0).key(short) == pytest.approx(by_hand, abs=1e-5)
    assert Ranking(beta=1.0).key(ranked[0]) == pytest.approx(math.log(0.189), abs=1e-5)


def test_ranking_of_a_decoding_gives_the_keys_its_search_ordered_by() -> None:
    """What n-best lists print as s(Y, X), under the settings of a decoding config rather than
    beam_search's arguments: log p / (|Y| + 1) for avg, then the coverage test's hand values."""
    a, b = TableModel.A, TableModel.B
    limit = {"max_length_a": 0.0, "max_length_b": 2}
    by_length = DecodingSchema(
        SearchStrategy.beam, 3, 1.0, 3, **limit, length_penalty_type=LengthPenaltyType.avg
    )
    ranked = decode(TableModel(), torch.tensor([[4, 4]]), torch.tensor([2]), by_length, BOS, EOS)
    assert [h.tokens for h in ranked[0]] == [[b], [a, b], [a]]  # gnmt's order: [b], [a], [a, b]
    assert [search.ranking_of(by_length).key(h) for h in ranked[0]] == pytest.approx(
        [math.log(0.36) / 2, math.log(0.189) / 3, math.log(0.24) / 2], abs=1e-6
    )
    covering = DecodingSchema(SearchStrategy.beam, 3, 0.0, 3, **limit, coverage_penalty=1.0)
    model: Any = AttendingTableModel()
    ranked = decode(model, torch.tensor([[4, 4, 4]]), torch.tensor([3]), covering, BOS, EOS)
    assert [h.tokens for h in ranked[0]][:2] == [[a, b], [b]]
    keys = [search.ranking_of(covering).key(h) for h in ranked[0]]
    by_hand = math.log(0.36) + math.log(0.9) + math.log(0.2) + math.log(0.9)
    assert keys[:2] == pytest.approx([math.log(0.189), by_hand], abs=1e-5)
    assert keys == sorted(keys, reverse=True)
    (greedy,) = decode(TableModel(), torch.tensor([[4, 4]]), torch.tensor([2]),
                       DecodingSchema(**limit), BOS, EOS)  # fmt: skip
    assert search.ranking_of(DecodingSchema(**limit)).key(greedy[0]) == greedy[0].score


def test_coverage_penalty_needs_attention() -> None:
    """The search, the schema and the translator each refuse it for a model without attention."""
    model: Any = TableModel()
    src, lengths = torch.tensor([[4, 4]]), torch.tensor([2])
    with pytest.raises(ValueError, match=r"decoding\.coverage_penalty=0\.5 needs attention"):
        beam_search(model, src, lengths, BOS, EOS, 2, coverage_penalty=0.5)
    none, bahdanau = make_model("none"), make_model("bahdanau")
    assert not none.attends and bahdanau.attends
    assert Ensemble([bahdanau]).attends and not Ensemble([bahdanau, none]).attends
    decoding = DecodingSchema(SearchStrategy.beam, beam_size=2, coverage_penalty=0.5)
    decoding.check_attention(True)
    message = r"^decoding\.coverage_penalty=0\.5 needs attention weights, and this model has none"
    with pytest.raises(ConfigError, match=message):
        decoding.check_attention(False)
    with pytest.raises(ConfigError, match=message):  # before the tokenizers are touched
        Translator(none, None, None).translate(["a b"], decoding)  # type: ignore[arg-type]


def test_options_at_their_defaults_change_nothing() -> None:
    """Explicit defaults, and bans that ban nothing (floor(0.1 * n) = 0 tokens, no 20-gram
    fits), give the very same hypotheses as the plain call."""
    model = make_model()
    plain = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT)
    plain_beam = beam_search(model, SRC, LENGTHS, BOS, EOS, 3, 0.6, 2, **LIMIT)
    for bans in (
        {"min_length_a": 0.0, "no_repeat_ngram_size": 0},
        {"min_length_a": 0.1, "no_repeat_ngram_size": 20},
    ):
        greedy = greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT, **bans)
        beam = beam_search(
            model,
            SRC,
            LENGTHS,
            BOS,
            EOS,
            3,
            0.6,
            2,
            **LIMIT,
            **bans,
            length_penalty_type="gnmt",
            coverage_penalty=0.0,
        )
        assert [(h.tokens, h.score) for h in greedy] == [(h.tokens, h.score) for h in plain]
        assert [[(h.tokens, h.score) for h in s] for s in beam] == [
            [(h.tokens, h.score) for h in s] for s in plain_beam
        ]
        for x, y in zip(
            greedy + [h for s in beam for h in s],
            plain + [h for s in plain_beam for h in s],
            strict=True,
        ):
            assert torch.equal(x.attention, y.attention)


def test_decode_passes_every_option_on() -> None:
    model = make_model()
    bans = {"min_length_a": 0.5, "no_repeat_ngram_size": 2, **LIMIT}
    ranking = {"length_penalty_type": LengthPenaltyType.avg, "coverage_penalty": 0.5}
    beam = DecodingSchema(SearchStrategy.beam, 3, 0.0, 2, **bans, **ranking)
    padded = {"output_layer": prepared(PaddedOutput, model.output_layer)}  # what decode takes
    runs = [
        (
            DecodingSchema(**bans),
            [[h] for h in greedy_decode(model, SRC, LENGTHS, BOS, EOS, **bans, **padded)],
        ),
        (
            beam,
            beam_search(model, SRC, LENGTHS, BOS, EOS, 3, 0.0, 2, **bans, **ranking, **padded),
        ),
    ]
    for decoding, expected in runs:
        got = decode(model, SRC, LENGTHS, decoding, BOS, EOS)
        assert [[(h.tokens, h.score) for h in s] for s in got] == [
            [(h.tokens, h.score) for h in s] for s in expected
        ]
