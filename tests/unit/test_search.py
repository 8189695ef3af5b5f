"""Greedy and beam search: beam 1 equals greedy, n-best order, batch invariance, EOS, length."""

from __future__ import annotations

import math

import pytest
import torch

from seq2attn import search
from seq2attn.models.decoders import DecoderState, Memory
from seq2attn.models.scorers import AdditiveScorer, DotScorer, GeneralScorer
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.search import beam_search, gnmt_length_penalty, greedy_decode

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
        search, "_top_k_step", lambda *args: top_k_step(*args[:-1], k=V)
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
