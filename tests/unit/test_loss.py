"""The fused output layer + cross-entropy equals nn.Linear + F.cross_entropy, values and grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seq2attn import loss as loss_module
from seq2attn.loss import CHUNK_ROWS, COLUMN_MULTIPLE, ROW_MULTIPLE, linear_cross_entropy
from tests.unit.operations import Operation, recorded

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


def _product_rows(smoothing: float, autocast: bool) -> tuple[set[int], torch.Tensor, list]:
    """Row counts the output layer's products saw (forward and backward), the loss, grads."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[int] = set()

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("mm", "addmm"):
                matrices = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 2]
                seen.update(m.size(0) for m in matrices if m.size(1) in (8, 11))
            return func(*args, **(kwargs or {}))

    features, layer, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), Shapes():
        loss = linear_cross_entropy(features, layer, targets, smoothing)
        grads = list(_grads(loss, features, layer))
    return seen, loss, grads


def _loss_and_grads(smoothing: float) -> tuple[torch.Tensor, tuple]:
    """The fused loss of _inputs() in fp32 and its gradients."""
    features, layer, targets = _inputs()
    loss = linear_cross_entropy(features, layer, targets, smoothing)
    return loss, _grads(loss, features, layer)


def _assert_same(loss: torch.Tensor, grads, expected_loss: torch.Tensor, expected_grads) -> None:
    torch.testing.assert_close(loss, expected_loss)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def _assert_close_to_the_bf16_reference(loss: torch.Tensor, grads: list, smoothing: float) -> None:
    """The fused loss and gradients of _inputs() under bf16 autocast against the reference's."""
    features, layer, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = _reference(features, layer, targets, smoothing)
    torch.testing.assert_close(loss, reference.float(), rtol=2e-2, atol=0)
    for got, want in zip(grads, _grads(reference, features, layer), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want.to(got.dtype), rtol=5e-2, atol=5e-3)
    assert grads[0].reshape(-1, 8)[(targets == PAD).flatten()].abs().sum() == 0


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_bf16_products_see_rows_padded_to_a_multiple_and_the_padding_changes_nothing(
    smoothing: float,
) -> None:
    kept = int((_inputs()[2] != PAD).sum())  # 9 target tokens
    rows, loss, grads = _product_rows(smoothing, autocast=True)
    assert ROW_MULTIPLE in rows and kept not in rows  # few distinct shapes for oneDNN's cache
    _assert_close_to_the_bf16_reference(loss, grads, smoothing)


def test_fp32_products_see_only_the_kept_rows() -> None:
    kept = int((_inputs()[2] != PAD).sum())
    rows, _, _ = _product_rows(0.0, autocast=False)
    assert kept in rows and ROW_MULTIPLE not in rows


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_zero_padding_rows_change_neither_the_loss_nor_any_gradient(
    smoothing: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # padding forced in fp32, where it is exact up to summation order: 55 zero rows
    unpadded = _loss_and_grads(smoothing)
    monkeypatch.setattr(loss_module, "_rows_padding", lambda rows, weight: 55)
    _assert_same(*_loss_and_grads(smoothing), *unpadded)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_forward_multiplies_the_rows_in_chunks_that_change_nothing(
    smoothing: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9 kept rows in chunks of 4 (fp32, where chunking is exact up to summation order)
    whole = _loss_and_grads(smoothing)
    monkeypatch.setattr(loss_module, "CHUNK_ROWS", 4)
    rows, chunked, grads = _product_rows(smoothing, autocast=False)
    # forward: 4 + 4 + 1 rows; backward: all 9 (8 and 11 are the layer's sizes)
    assert rows - {8, 11} == {4, 1, 9}
    _assert_same(chunked, grads, *whole)


def test_bf16_chunks_are_multiples_of_the_row_multiple_and_the_last_holds_the_padding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert CHUNK_ROWS % ROW_MULTIPLE == 0
    monkeypatch.setattr(loss_module, "ROW_MULTIPLE", 2)
    monkeypatch.setattr(loss_module, "CHUNK_ROWS", 6)
    rows, loss, grads = _product_rows(0.1, autocast=True)  # 9 kept rows and 1 zero row
    assert rows - {8, 11} == {6, 4, 10}  # forward: 6, then 3 + the zero row; backward: all 10
    _assert_close_to_the_bf16_reference(loss, grads, 0.1)


def test_a_second_backward_through_a_retained_graph_gives_the_same_gradients() -> None:
    # the backward reads the forward's buffer without changing it
    features, layer, targets = _inputs()
    loss = linear_cross_entropy(features, layer, targets, 0.1)
    inputs = [features, layer.weight, layer.bias]
    first = torch.autograd.grad(loss * 0.37, inputs, retain_graph=True)
    second = torch.autograd.grad(loss * 2.5, inputs)
    for once, again in zip(first, second, strict=True):
        torch.testing.assert_close(again, once * (2.5 / 0.37))


def _operations(autocast: bool) -> tuple[torch.Tensor, list[Operation]]:
    """The fused loss of _inputs() (smoothing 0.1) and every operation of its forward and
    backward."""
    features, layer, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), recorded() as seen:
        loss = linear_cross_entropy(features, layer, targets, 0.1)
        _grads(loss, features, layer)
    return loss, seen


def test_fp32_products_write_a_multiple_of_the_column_multiple_logits() -> None:
    loss, operations = _operations(autocast=False)  # a layer of 11 outputs
    widths = [op.out_width for op in operations if op.name in ("mm", "addmm") and op.out_width]
    assert widths == [-(-11 // COLUMN_MULTIPLE) * COLUMN_MULTIPLE]  # one chunk, 11 logits padded
    features, layer, targets = _inputs()
    torch.testing.assert_close(loss, _reference(features, layer, targets, 0.1))


@pytest.mark.parametrize("autocast", [False, True])
def test_every_logit_is_exponentiated_once(autocast: bool) -> None:
    rows = int((_inputs()[2] != PAD).sum())  # 9 kept rows; bf16 products pad them to 64
    if autocast:
        rows = -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE
    _, operations = _operations(autocast)
    exponentiated = sum(op.size for op in operations if op.name in ("exp", "exp_"))
    assert exponentiated == rows * 11  # the softmax's, over the layer's 11 outputs
    assert not [op for op in operations if op.name == "logsumexp"]


def test_under_bf16_autocast_the_output_products_are_bf16_and_never_write_in_place() -> None:
    _, operations = _operations(autocast=True)
    products = [op for op in operations if op.name in ("mm", "addmm")]
    assert products and all(op.dtype == torch.bfloat16 and op.out_width is None for op in products)
