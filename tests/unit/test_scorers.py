"""Each scorer against a hand-computed value; chunked and single-shot scoring agree; the tanh
scorers equal the textbook formula, gradients included, in both forms of their tanh layer: a
sigmoid in fp32 and fp64 on a CPU, torch's tanh under autocast; a step doubles no weight."""

from __future__ import annotations

import math

import pytest
import torch

from seq2attn.models import scorers
from seq2attn.models.scorers import (
    AdditiveScorer,
    ConcatScorer,
    DotScorer,
    GeneralScorer,
    LocationScorer,
    MLPScorer,
    ScaledDotScorer,
)
from tests.unit.operations import recorded


def one(*values: float) -> torch.Tensor:
    """A single vector as a (B=1, T=1, H) tensor."""
    return torch.tensor([[list(values)]])


def set_(param: torch.nn.Parameter, values: list) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype))


def score(scorer: scorers.Scorer, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return scorer.score(query, scorer.prepare(keys))


def test_dot_hand_value() -> None:
    assert score(DotScorer(2, 2), one(1.0, 3.0), one(2.0, -5.0)).item() == -13.0


def test_scaled_dot_divides_by_sqrt_of_size() -> None:
    value = score(ScaledDotScorer(2, 2), one(1.0, 3.0), one(2.0, -5.0)).item()
    assert value == pytest.approx(-13.0 / math.sqrt(2.0))


@pytest.mark.parametrize("scorer_class", [DotScorer, ScaledDotScorer])
def test_dot_size_mismatch_names_both_sizes(scorer_class: type[DotScorer]) -> None:
    with pytest.raises(ValueError, match=r"query_size=3 and key_size=4.*project_keys"):
        scorer_class(3, 4)


def test_dot_project_keys_projects_once_to_query_size() -> None:
    scorer = DotScorer(1, 2, project_keys=True)
    set_(scorer.key_projection.weight, [[1.0, 2.0]])
    keys = torch.tensor([[[2.0, -5.0], [1.0, 1.0]]])  # (1, 2, 2)
    prepared = scorer.prepare(keys)
    assert prepared.tolist() == [[[-8.0], [3.0]]]
    assert scorer.score(torch.tensor([[[3.0]]]), prepared).tolist() == [[[-24.0, 9.0]]]


def test_general_hand_value() -> None:
    scorer = GeneralScorer(2, 2)
    set_(scorer.W.weight, [[1.0, 2.0], [0.0, 1.0]])
    # W h_s = (2 - 10, -5) = (-8, -5); h_t . W h_s = -8 - 15
    assert score(scorer, one(1.0, 3.0), one(2.0, -5.0)).item() == -23.0


def test_scaled_general_divides_by_the_root_of_the_query_size() -> None:
    scorer = GeneralScorer(4, 2, scale=True)
    set_(scorer.W.weight, [[1.0, 2.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    # W h_s = (2 - 10, -5, 2, 0) = (-8, -5, 2, 0); h_t . W h_s = -8 - 15 + 2 = -21; / sqrt(4)
    assert score(scorer, one(1.0, 3.0, 1.0, 7.0), one(2.0, -5.0)).item() == -10.5


def test_scale_init_starts_with_the_scaled_scores_and_leaves_the_score_unscaled() -> None:
    query, keys = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    torch.manual_seed(0)
    scaled = GeneralScorer(16, 8, scale=True)
    torch.manual_seed(0)
    control = GeneralScorer(16, 8, scale_init=True)
    assert not control.scale
    assert torch.allclose(control.W.weight, scaled.W.weight / 4.0)
    assert torch.allclose(score(control, query, keys), score(scaled, query, keys), atol=1e-6)


def test_general_allows_different_sizes() -> None:
    scorer = GeneralScorer(1, 2)
    set_(scorer.W.weight, [[1.0, -1.0]])
    assert score(scorer, one(2.0), one(5.0, 3.0)).item() == 4.0


def test_concat_hand_value() -> None:
    scorer = ConcatScorer(1, 1, hidden_size=2)
    set_(scorer.W.weight, [[1.0, 1.0], [2.0, -1.0]])
    set_(scorer.v.weight, [[2.0, 3.0]])
    # W [0.5; 1] = (1.5, 0); v . tanh(1.5, 0) = 2 tanh(1.5)
    assert score(scorer, one(0.5), one(1.0)).item() == pytest.approx(2 * math.tanh(1.5))


def test_additive_hand_value() -> None:
    scorer = AdditiveScorer(1, 1, hidden_size=2)
    set_(scorer.W.weight, [[1.0], [2.0]])
    set_(scorer.U.weight, [[0.5], [-1.5]])
    set_(scorer.v.weight, [[1.0, -1.0]])
    # W s + U h with s = 1, h = 2: (1 + 1, 2 - 3) = (2, -1)
    expected = math.tanh(2.0) - math.tanh(-1.0)
    assert score(scorer, one(1.0), one(2.0)).item() == pytest.approx(expected)


def test_location_hand_value_and_length_check() -> None:
    scorer = LocationScorer(2, 5, max_source_length=4)
    set_(scorer.W_a.weight, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
    keys = torch.zeros(1, 3, 5)
    assert score(scorer, one(2.0, -1.0), keys).tolist() == [[[2.0, -1.0, 1.0]]]
    with pytest.raises(ValueError, match="max_source_length=4.*source length 5"):
        scorer.prepare(torch.zeros(1, 5, 5))


def test_mlp_equals_manual_forward() -> None:
    torch.manual_seed(0)
    scorer = MLPScorer(3, 4, hidden_sizes=[5, 6])
    query, keys = torch.randn(2, 3, 3), torch.randn(2, 4, 4)
    pairs = torch.cat(
        [query.unsqueeze(2).expand(-1, -1, 4, -1), keys.unsqueeze(1).expand(-1, 3, -1, -1)], -1
    )  # (B, T, S, Hq + Hk)
    second = scorer.hidden[0]
    hidden = torch.tanh(second(torch.tanh(scorer.first(pairs))))
    expected = (hidden @ scorer.out.weight.T).squeeze(-1)
    actual = score(scorer, query, keys)
    assert actual.shape == (2, 3, 4)
    torch.testing.assert_close(actual, expected)


def _pairs(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[h_t; h_s] for every (t, s): (B, T, S, Hq + Hk)."""
    t, s = query.size(1), keys.size(1)
    return torch.cat(
        [query.unsqueeze(2).expand(-1, -1, s, -1), keys.unsqueeze(1).expand(-1, t, -1, -1)], -1
    )


def _textbook(scorer: scorers.Scorer, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The tanh scorers' scores as their docstrings write them, with torch.tanh."""
    if isinstance(scorer, AdditiveScorer):
        hidden = torch.tanh(scorer.W(query).unsqueeze(2) + scorer.U(keys).unsqueeze(1))
        return scorer.v(hidden).squeeze(-1)
    if isinstance(scorer, ConcatScorer):
        return scorer.v(torch.tanh(scorer.W(_pairs(query, keys)))).squeeze(-1)
    assert isinstance(scorer, MLPScorer)
    hidden = scorer.hidden(torch.tanh(scorer.first(_pairs(query, keys))))
    return scorer.out(hidden).squeeze(-1)


TANH_SCORERS = [
    lambda: ConcatScorer(3, 4, hidden_size=5),
    lambda: AdditiveScorer(3, 4, hidden_size=5),
    lambda: MLPScorer(3, 4, hidden_sizes=[5]),
    lambda: MLPScorer(3, 4, hidden_sizes=[5, 2]),
]


@pytest.mark.parametrize("make", TANH_SCORERS)
def test_tanh_scorers_equal_the_textbook_formula_with_their_gradients(make) -> None:
    torch.manual_seed(0)
    scorer = make().double()
    query = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, 4, dtype=torch.float64)
    inputs = [query, keys, *scorer.parameters()]
    got = score(scorer, query, keys)
    expected = _textbook(scorer, query, keys)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad((got * weights).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _first_layer_operations(scorer: scorers.Scorer, autocast: bool) -> list[str]:
    """The operations, forward and backward, whose result has the shape of the scorer's first
    tanh layer over the pairs (every scorer of TANH_SCORERS has 5 units there)."""
    torch.manual_seed(1)
    query, keys = torch.randn(2, 3, 3, requires_grad=True), torch.randn(2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), recorded() as operations:
        score(scorer, query, keys).float().sum().backward()
    return [op.name for op in operations if op.shape == (2, 3, 4, 5)]


@pytest.mark.parametrize("make", TANH_SCORERS)
def test_in_fp32_the_first_tanh_layer_is_one_sigmoid_and_no_tanh(make) -> None:
    torch.manual_seed(0)
    names = _first_layer_operations(make(), autocast=False)
    assert names.count("sigmoid_") == 1
    assert not [name for name in names if name.startswith("tanh")]


@pytest.mark.parametrize("make", TANH_SCORERS)
def test_under_autocast_a_float64_scorer_takes_torchs_tanh_and_the_textbook_values(make) -> None:
    torch.manual_seed(0)
    scorer = make().double()
    query = torch.randn(2, 3, 3, dtype=torch.float64)
    keys = torch.randn(2, 4, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16), recorded() as operations:
        got = score(scorer, query, keys)  # autocast leaves float64 as it is
    names = [op.name for op in operations if op.shape == (2, 3, 4, 5)]
    assert names.count("tanh_") == 1 and "sigmoid_" not in names
    torch.testing.assert_close(got, _textbook(scorer, query, keys), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", TANH_SCORERS)
def test_a_step_multiplies_no_weight_by_two(make) -> None:
    torch.manual_seed(0)
    scorer = make()
    prepared = scorer.prepare(torch.randn(2, 4, 4))  # the keys are doubled here, once a batch
    query = torch.randn(2, 1, 3)
    with recorded() as operations:
        score_of_step = scorer.score(query, prepared)
    assert score_of_step.shape == (2, 1, 4)
    # no (part of a) first-layer weight, 5 rows, is doubled; the head's smaller layers are
    doubled = [op.shape for op in operations if op.name == "mul" and op.shape]
    assert doubled and not [shape for shape in doubled if len(shape) == 2 and shape[0] == 5]


@pytest.mark.parametrize("make", TANH_SCORERS)
def test_under_bf16_autocast_the_tanh_scorers_keep_torchs_tanh(make) -> None:
    torch.manual_seed(0)
    scorer = make()
    names = _first_layer_operations(scorer, autocast=True)
    assert names.count("tanh_") == 1 and "sigmoid_" not in names
    query, keys = torch.randn(2, 3, 3), torch.randn(2, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = score(scorer, query, keys), _textbook(scorer, query, keys)
    assert got.dtype == expected.dtype == torch.bfloat16
    # the scorers' two partial products round to bf16 apart, the textbook's [h_t; h_s] product once
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-2)


def test_mlp_needs_a_layer() -> None:
    with pytest.raises(ValueError, match="hidden_sizes"):
        MLPScorer(2, 2, hidden_sizes=[])


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConcatScorer(3, 4, hidden_size=5),
        lambda: AdditiveScorer(3, 4, hidden_size=5),
        lambda: MLPScorer(3, 4, hidden_sizes=[5, 2]),
    ],
)
def test_chunked_scores_equal_single_shot(make, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    scorer = make()
    query, prepared = torch.randn(2, 7, 3), scorer.prepare(torch.randn(2, 4, 4))
    whole = scorer.score(query, prepared)
    monkeypatch.setattr(scorers, "CHUNK_ELEMENTS", 2 * 4 * 5 * 2)  # two queries per chunk
    torch.testing.assert_close(scorer.score(query, prepared), whole)
    steps = torch.cat([scorer.score(query[:, t : t + 1], prepared) for t in range(7)], dim=1)
    torch.testing.assert_close(steps, whole)


@pytest.mark.parametrize(
    ("scorer_class", "options", "message"),
    [
        (AdditiveScorer, {"hidden_size": 0}, r"^hidden_size=0: must be a positive number"),
        (ConcatScorer, {"hidden_size": -3}, r"^hidden_size=-3: must be a positive number"),
        (MLPScorer, {"hidden_sizes": [4, 0]}, r"^hidden_sizes=\[4, 0\]: give one or more"),
        (LocationScorer, {"max_source_length": 0}, r"^max_source_length=0: must be a positive"),
        (DotScorer, {}, r"^DotScorer needs query_size == key_size, got query_size=3"),
    ],
)
def test_check_names_the_option_and_the_constructor_runs_it(
    scorer_class: type[scorers.Scorer], options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        scorer_class.check(3, 4, **options)
    with pytest.raises(ValueError, match=message):
        scorer_class(3, 4, **options)


def test_check_accepts_what_the_scorer_can_build() -> None:
    DotScorer.check(3, 4, project_keys=True)
    ScaledDotScorer.check(4, 4)
    GeneralScorer.check(3, 4)  # no options to check: the base class's check
    MLPScorer.check(3, 4, hidden_sizes=(2,))
