"""The fused output layer + cross-entropy equals nn.Linear + F.cross_entropy, values and grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seq2attn.loss import linear_cross_entropy

PAD = 0


def _inputs(seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    features = torch.randn(3, 5, 8, requires_grad=True)
    layer = nn.Linear(8, 11)
    targets = torch.randint(1, 11, (3, 5))
    targets[0, 3:] = PAD  # padding rows carry no loss and get zero gradient
    targets[2, 1:] = PAD
    return features, layer, targets


def _reference(features, layer, targets, smoothing):
    logits = layer(features)
    return F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=PAD,
        label_smoothing=smoothing, reduction="sum",
    )  # fmt: skip


def _grads(loss, features, layer):
    return torch.autograd.grad(loss * 0.37, [features, layer.weight, layer.bias])


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_and_gradients_equal_linear_then_cross_entropy(smoothing: float) -> None:
    features, layer, targets = _inputs()
    fused = linear_cross_entropy(features, layer, targets, smoothing, ignore_index=PAD)
    reference = _reference(features, layer, targets, smoothing)
    torch.testing.assert_close(fused, reference)
    for got, want in zip(
        _grads(fused, features, layer), _grads(reference, features, layer), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_padding_rows_get_exactly_zero_gradient() -> None:
    features, layer, targets = _inputs()
    (grad,) = torch.autograd.grad(linear_cross_entropy(features, layer, targets), [features])
    assert torch.count_nonzero(grad[targets == PAD]) == 0
    assert torch.count_nonzero(grad[targets != PAD]) > 0


def test_bias_free_layer_gets_a_weight_gradient_only() -> None:
    features, _, targets = _inputs()
    layer = nn.Linear(8, 11, bias=False)
    loss = linear_cross_entropy(features, layer, targets)
    torch.testing.assert_close(loss, _reference(features, layer, targets, 0.0))
    loss.backward()
    assert layer.weight.grad is not None and layer.bias is None


def test_under_bf16_autocast_the_product_is_bf16_and_gradients_keep_their_dtypes() -> None:
    features, layer, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_cross_entropy(features, layer, targets)
        reference = _reference(features, layer, targets, 0.0)
    assert fused.dtype == torch.float32  # the softmax and the sum run in fp32
    torch.testing.assert_close(fused, reference.float(), rtol=2e-2, atol=0)
    fused.backward()
    assert features.grad is not None and features.grad.dtype == torch.float32
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
