"""masked_softmax and Attention: weights sum to 1 over real positions, exactly 0 on padding."""

from __future__ import annotations

import math

import pytest
import torch

from seq2attn.models.attention import Attention, masked_softmax
from seq2attn.models.scorers import (
    AdditiveScorer,
    ConcatScorer,
    DotScorer,
    GeneralScorer,
    LocationScorer,
    MLPScorer,
    ScaledDotScorer,
)

SCORERS = {
    "dot": lambda: DotScorer(4, 4),
    "dot_projected": lambda: DotScorer(4, 6, project_keys=True),
    "scaled_dot": lambda: ScaledDotScorer(4, 4),
    "general": lambda: GeneralScorer(4, 6),
    "concat": lambda: ConcatScorer(4, 6),
    "additive": lambda: AdditiveScorer(4, 6, hidden_size=3),
    "mlp": lambda: MLPScorer(4, 6, hidden_sizes=[3, 2]),
    "location": lambda: LocationScorer(4, 6, max_source_length=8),
}


def test_masked_softmax_hand_value() -> None:
    scores = torch.tensor([[[0.0, math.log(3.0), 100.0]]])
    pad = torch.tensor([[False, False, True]])
    weights = masked_softmax(scores, pad)
    torch.testing.assert_close(weights, torch.tensor([[[0.25, 0.75, 0.0]]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_masked_softmax_never_gives_nan(dtype: torch.dtype) -> None:
    """A fully padded row (where -inf filling gives NaN) gets all-zero weights."""
    scores = torch.tensor([[[1.0, -2.0]], [[3.0, 60000.0]]], dtype=dtype)
    pad = torch.tensor([[True, True], [False, True]])
    weights = masked_softmax(scores, pad)
    assert weights.tolist() == [[[0.0, 0.0]], [[1.0, 0.0]]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(SCORERS))
def test_weights_sum_to_one_and_are_zero_on_padding(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    attention = Attention(SCORERS[name]()).to(dtype)
    lengths = torch.tensor([5, 2, 1])
    pad = torch.arange(5).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, S)
    keys = torch.randn(3, 5, 4 if name in ("dot", "scaled_dot") else 6, dtype=dtype)
    keys = keys.masked_fill(pad.unsqueeze(-1), 0.0)
    query = torch.randn(3, 4, 4, dtype=dtype)
    out = attention(query, keys, attention.prepare(keys), pad)
    assert out.weights.shape == (3, 4, 5)
    assert (out.weights.masked_select(pad.unsqueeze(1)) == 0).all()
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-6
    sums = out.weights.double().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=tolerance, rtol=0)
    torch.testing.assert_close(out.context, out.weights @ keys)


@pytest.mark.parametrize("name", ["dot", "general"])
def test_under_cpu_bf16_autocast_scores_and_context_multiply_in_fp32(name: str) -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    batched: list[torch.dtype] = []

    class Dtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == "bmm":
                batched.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    attention = Attention(SCORERS[name]())
    query, keys = torch.randn(2, 3, 4), torch.randn(2, 5, attention.scorer.key_size)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    reference = attention(query, keys, attention.prepare(keys), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16), Dtypes():
        out = attention(query, keys, attention.prepare(keys), mask)
    assert batched == [torch.float32, torch.float32]  # the score, then the context
    assert out.context.dtype == out.weights.dtype == torch.float32
    # only the general scorer's key projection ran in bf16
    tolerance = 0 if name == "dot" else 3e-2
    torch.testing.assert_close(out.context, reference.context, rtol=tolerance, atol=tolerance)
