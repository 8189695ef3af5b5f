"""Output checks of eval: repetition rate and length ratio against hand-computed values."""

from __future__ import annotations

import pytest

from seq2attn.metrics import length_ratio, output_scores, repetition_rate

LOOP = "a dog with a ball with a ball with a ball ."  # "with a" and "a ball" three times
TWICE = "the dog sees the dog ."  # "the dog" twice only
ALTERNATING = "a b a b a b"  # "a b" three times, overlapping "b a" twice
PLAIN = "a cat sits on the mat ."


@pytest.mark.parametrize(
    ("hypotheses", "expected"),
    [
        ([LOOP], 100.0),
        ([TWICE], 0.0),
        ([ALTERNATING], 100.0),
        (["x x x x"], 100.0),  # "x x" at positions 0, 1 and 2
        (["x x x"], 0.0),  # "x x" twice; a word three times is no n-gram with n >= 2
        ([LOOP, TWICE, PLAIN, ""], 25.0),
        ([LOOP, ALTERNATING, TWICE], 200.0 / 3),
        ([], 0.0),
    ],
)
def test_repetition_rate_counts_hypotheses_with_an_ngram_three_times(
    hypotheses: list[str], expected: float
) -> None:
    assert repetition_rate(hypotheses) == pytest.approx(expected)


def test_a_longer_ngram_three_times_counts() -> None:
    """A trigram three times, apart: its first bigram is three times too."""
    assert repetition_rate(["p q r s p q r t p q r ."]) == 100.0


def test_length_ratio_is_total_hypothesis_words_over_total_reference_words() -> None:
    hypotheses = ["a dog runs .", "two cats"]  # 4 + 2 words
    references = ["a big dog runs .", "two small cats sleep"]  # 5 + 4 words
    assert length_ratio(hypotheses, references) == pytest.approx(6 / 9)
    assert length_ratio(["  spaced   out  "], ["one"]) == 2.0
    assert length_ratio(["a"], [""]) == 0.0
    assert output_scores([LOOP, TWICE], [LOOP, "the dog sees ."]) == {
        "repetition_rate": 50.0,
        "length_ratio": pytest.approx((12 + 6) / (12 + 4)),
    }
