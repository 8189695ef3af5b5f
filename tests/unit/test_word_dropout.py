"""Word dropout: whole vectors zeroed at rate p, the rest rescaled, nothing changed in eval."""

from __future__ import annotations

import pytest
import torch

from seq2attn.models.word_dropout import WordDropout


def test_drops_whole_vectors_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    embedded = torch.randn(64, 50, 8) + 3.0  # no vector is zero by chance
    out = WordDropout(0.25).train()(embedded)
    dropped = (out == 0).all(dim=-1)
    assert ((out == 0).any(dim=-1) == dropped).all()  # never part of a vector
    torch.testing.assert_close(out[~dropped], embedded[~dropped] / 0.75)
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.02)


def test_identity_in_eval_and_at_zero() -> None:
    embedded = torch.randn(3, 4, 5)
    assert torch.equal(WordDropout(0.5).eval()(embedded), embedded)
    assert torch.equal(WordDropout(0.0).train()(embedded), embedded)


def test_one_draw_per_step_input() -> None:
    """A decoder step's (B, E) input: each row kept or dropped whole."""
    torch.manual_seed(1)
    out = WordDropout(0.5).train()(torch.ones(1000, 6))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert ((out == 0).all(dim=1) | (out == 2).all(dim=1)).all()


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_rejects_probabilities_outside_the_unit_interval(p: float) -> None:
    with pytest.raises(ValueError, match=rf"word dropout p={p}: must lie in \[0, 1\)"):
        WordDropout(p)
