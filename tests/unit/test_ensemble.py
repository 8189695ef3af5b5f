"""Ensemble decoding: the step mixes the members' probabilities, searches run it unchanged."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from seq2attn.ensemble import Ensemble
from seq2attn.search import beam_search, greedy_decode
from tests.unit.test_search import BOS, EOS, LENGTHS, LIMIT, SRC, V, make_model


def _two_models(wiring: str = "luong_feed") -> tuple[torch.nn.Module, torch.nn.Module]:
    first = make_model(wiring)
    second = make_model(wiring)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in second.parameters():
            param.add_(torch.randn_like(param))
    return first, second


def test_step_is_the_log_of_the_members_mean_probabilities_and_mean_attention() -> None:
    first, second = _two_models()
    ensemble = Ensemble([first, second])
    memory, state = ensemble.encode(SRC, LENGTHS)
    tokens = torch.full((SRC.size(0),), BOS)
    log_probs, new_state, attention = ensemble.step(tokens, state, memory)

    expected_probs, expected_attention = 0.0, 0.0
    for model in (first, second):
        model_memory, model_state = model.encode(SRC, LENGTHS)
        logits, _, model_attention = model.step(tokens, model_state, model_memory)
        expected_probs = expected_probs + logits.softmax(dim=-1) / 2
        expected_attention = expected_attention + model_attention / 2
    torch.testing.assert_close(log_probs, expected_probs.log())
    torch.testing.assert_close(attention, expected_attention)
    assert log_probs.exp().sum(dim=-1).tolist() == pytest.approx([1.0] * SRC.size(0))
    assert len(new_state.members) == 2
    # the mixture is neither member: the second model really takes part
    first_memory, first_state = first.encode(SRC, LENGTHS)
    first_logits, _, _ = first.step(tokens, first_state, first_memory)
    assert not torch.allclose(log_probs, first_logits.log_softmax(dim=-1), atol=1e-3)


@pytest.mark.parametrize("wiring", ["bahdanau", "luong_feed"])
def test_an_ensemble_of_copies_searches_like_the_model(wiring: str) -> None:
    model = make_model(wiring)
    ensemble = Ensemble([model, copy.deepcopy(model)])
    for search in (
        lambda m: [[h] for h in greedy_decode(m, SRC, LENGTHS, BOS, EOS, **LIMIT)],
        lambda m: beam_search(m, SRC, LENGTHS, BOS, EOS, 3, 1.0, n_best=2, **LIMIT),
    ):
        alone, together = search(model), search(ensemble)
        for alone_nbest, together_nbest in zip(alone, together, strict=True):
            assert [h.tokens for h in together_nbest] == [h.tokens for h in alone_nbest]
            for a, b in zip(alone_nbest, together_nbest, strict=True):
                assert b.score == pytest.approx(a.score, abs=1e-4)
                torch.testing.assert_close(b.attention, a.attention)


def test_greedy_follows_the_mixture_not_a_member() -> None:
    first, second = _two_models("bahdanau")
    hypotheses = greedy_decode(Ensemble([first, second]), SRC, LENGTHS, BOS, EOS, **LIMIT)
    tokens = torch.full((SRC.size(0),), BOS)
    probs = 0.0
    for model in (first, second):
        memory, state = model.encode(SRC, LENGTHS)
        probs = probs + model.step(tokens, state, memory)[0].softmax(dim=-1) / 2
    first_tokens = [h.tokens[0] if h.tokens else EOS for h in hypotheses]
    assert first_tokens == probs.argmax(dim=-1).tolist()
    # score of a hypothesis = sum of the mixture's log-probabilities of its tokens
    assert all(h.score <= 0 and math.isfinite(h.score) for h in hypotheses)


def test_without_attention_the_ensemble_has_none() -> None:
    first, second = _two_models("none")
    ensemble = Ensemble([first, second])
    memory, state = ensemble.encode(SRC, LENGTHS)
    _, _, attention = ensemble.step(torch.full((SRC.size(0),), BOS), state, memory)
    assert attention is None


def test_members_must_share_the_target_vocabulary() -> None:
    model = make_model()
    other = make_model()
    other.output_layer = torch.nn.Linear(other.output_layer.in_features, V + 1)
    with pytest.raises(ValueError, match=r"share the target vocabulary, got sizes \[9, 10\]"):
        Ensemble([model, other])
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
