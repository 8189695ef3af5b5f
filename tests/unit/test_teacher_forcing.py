import math

import pytest

from seq2attn.teacher_forcing import (
    AlwaysSchedule,
    ConstantSchedule,
    ExponentialSchedule,
    Feedback,
    InverseSigmoidSchedule,
    LinearSchedule,
    NeverSchedule,
)


@pytest.mark.parametrize("step", [0, 1, 10_000])
def test_always_and_never(step: int) -> None:
    assert AlwaysSchedule()(step) == 1.0
    assert NeverSchedule()(step) == 0.0


def test_constant() -> None:
    assert ConstantSchedule(p=0.75)(123) == 0.75


def test_linear_follows_formula_and_floors() -> None:
    schedule = LinearSchedule(start=1.0, end=0.2, decay_steps=100, warmup_steps=10)
    assert schedule(0) == 1.0
    assert schedule(10) == 1.0
    assert schedule(60) == pytest.approx(1.0 - 0.8 * 50 / 100)
    assert schedule(10_000) == 0.2


def test_exponential_follows_formula() -> None:
    schedule = ExponentialSchedule(start=0.9, k=0.99, floor=0.1)
    assert schedule(50) == pytest.approx(0.9 * 0.99**50)
    assert schedule(1_000_000) == 0.1


def test_inverse_sigmoid_follows_formula() -> None:
    schedule = InverseSigmoidSchedule(k=100.0, floor=0.0, warmup_steps=5)
    for step in (5, 105, 705):
        i = step - 5
        assert schedule(step) == pytest.approx(100 / (100 + math.exp(i / 100)))
    assert InverseSigmoidSchedule(k=10.0)(10**9) == pytest.approx(0.0, abs=1e-12)  # no overflow


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ConstantSchedule(p=1.5), "teacher_forcing.p=1.5"),
        (lambda: LinearSchedule(decay_steps=0), "teacher_forcing.decay_steps=0"),
        (lambda: ExponentialSchedule(k=1.0), "teacher_forcing.k=1.0"),
        (lambda: InverseSigmoidSchedule(k=0.5), "teacher_forcing.k=0.5"),
        (lambda: AlwaysSchedule(warmup_steps=-1), "teacher_forcing.warmup_steps=-1"),
    ],
)
def test_invalid_parameters_name_the_key(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        factory()


def test_feedback_is_parsed_from_config_strings() -> None:
    assert ConstantSchedule(p=0.5, feedback="sample").feedback is Feedback.sample
    with pytest.raises(ValueError):
        ConstantSchedule(p=0.5, feedback="beam")
