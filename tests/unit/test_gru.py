"""seq2attn.models.gru.GRU against nn.GRU: outputs, last states and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2attn.models.gru import GRU, reversal_index

LENGTHS = torch.tensor([3, 6, 1, 4, 6])


def pair(layers: int, bidirectional: bool, dropout: float = 0.0) -> tuple[nn.GRU, GRU]:
    torch.manual_seed(0)
    reference = nn.GRU(5, 7, layers, batch_first=True, bidirectional=bidirectional, dropout=dropout)
    ours = GRU(5, 7, layers, batch_first=True, bidirectional=bidirectional, dropout=dropout)
    ours.load_state_dict(reference.state_dict())
    return reference.double(), ours.double()


def run(
    gru: nn.GRU, x: Tensor, h0: Tensor, packed: bool
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """Outputs (B, T, D*H), last states and the gradients of x, h0 and every parameter of a loss
    that weighs each output differently."""
    if packed:
        sequence = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
        packed_out, last = gru(sequence, h0)
        out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.size(1))
    else:
        out, last = gru(x, h0)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + (last**2).sum()
    return out, last, torch.autograd.grad(loss, [x, h0, *gru.parameters()])


def graph_names(tensor: Tensor) -> set[str]:
    """The class names of every node of tensor's autograd graph."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_reversal_index_hand_example() -> None:
    # lengths 3, 2, 1: packed rows (t, row) = (0,0) (0,1) (0,2) (1,0) (1,1) (2,0)
    assert reversal_index(torch.tensor([3, 2, 1])).tolist() == [5, 4, 2, 3, 1, 0]


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_matches_nn_gru_in_values_and_gradients(
    layers: int, bidirectional: bool, packed: bool
) -> None:
    reference, ours = pair(layers, bidirectional)
    torch.manual_seed(1)
    x = torch.randn(5, 6, 5, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(layers * (2 if bidirectional else 1), 5, 7, dtype=torch.double)
    h0.requires_grad_(True)
    ref_out, ref_last, ref_grads = run(reference, x, h0, packed)
    out, last, grads = run(ours, x, h0, packed)
    assert "_RecurrenceBackward" in graph_names(out) & graph_names(last)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, ref_last, rtol=0, atol=1e-12)
    assert len(grads) == 2 + 4 * layers * (2 if bidirectional else 1)
    for ours_grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours_grad, ref_grad, rtol=0, atol=1e-12)


def test_training_pass_runs_the_recurrence_and_inference_runs_nn_gru() -> None:
    ours = GRU(5, 7, batch_first=True)
    x = torch.randn(2, 3, 5)
    out, _ = ours(x)
    assert "_RecurrenceBackward" in graph_names(out)
    with torch.no_grad():
        assert not ours._takes_recurrence(x)
    with torch.no_grad():
        assert not ours._takes_recurrence(x[0])  # unbatched: nn.GRU's own path
    assert not ours._takes_recurrence(x.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ours._takes_recurrence(x)
        out, _ = ours(x)
    assert "_RecurrenceBackward" not in graph_names(out)


@pytest.mark.parametrize("packed", [True, False])
def test_dropout_between_layers_draws_as_nn_gru(packed: bool) -> None:
    reference, ours = pair(2, True, dropout=0.5)
    x = torch.randn(5, 6, 5, dtype=torch.double, requires_grad=True)
    h0 = torch.zeros(4, 5, 7, dtype=torch.double, requires_grad=True)
    torch.manual_seed(3)
    ref_out, _, ref_grads = run(reference.train(), x, h0, packed)
    torch.manual_seed(3)
    out, _, grads = run(ours.train(), x, h0, packed)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for ours_grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours_grad, ref_grad, rtol=0, atol=1e-12)
    torch.manual_seed(4)
    assert not torch.allclose(run(ours, x, h0, packed)[0], out)


def test_checks_the_initial_state_as_nn_gru() -> None:
    _, ours = pair(1, False)
    x, wrong_batch = torch.randn(5, 6, 5, dtype=torch.double), torch.zeros(1, 4, 7).double()
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 5, 7\), got \[1, 4, 7\]"):
        ours(x, wrong_batch)
