"""Bridge: initial decoder state for each kind, and the size error."""

from __future__ import annotations

import pytest
import torch

from seq2attn.models.bridge import Bridge
from seq2attn.models.encoder import EncoderOutput


def encoder_output(with_cell: bool) -> EncoderOutput:
    """Two encoder layers, B = 2, Hk = 2; the second sentence has one real token."""
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, -1.0], [0.0, 0.0]]])
    final_hidden = torch.tensor([[[9.0, 9.0], [9.0, 9.0]], [[0.5, -0.5], [0.1, 0.2]]])
    final_cell = -final_hidden if with_cell else None
    src_pad_mask = torch.tensor([[False, False], [False, True]])
    return EncoderOutput(memory, final_hidden, final_cell, src_pad_mask)


def layers(x: torch.Tensor, n: int = 3) -> torch.Tensor:
    return x.unsqueeze(0).repeat(n, 1, 1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_zero(cell: str) -> None:
    state = Bridge("zero", cell, 2, 5, 3)(encoder_output(cell == "lstm"))
    assert state.hidden.shape == (3, 2, 5) and (state.hidden == 0).all()
    assert state.cell is None if cell == "gru" else (state.cell == 0).all()
    assert state.input_feed is None


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_last_repeats_top_encoder_layer(cell: str) -> None:
    enc = encoder_output(cell == "lstm")
    state = Bridge("last", cell, 2, 2, 3)(enc)
    assert state.hidden.tolist() == layers(torch.tensor([[0.5, -0.5], [0.1, 0.2]])).tolist()
    if cell == "lstm":
        assert state.cell.tolist() == (-state.hidden).tolist()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_mean_over_real_positions(cell: str) -> None:
    state = Bridge("mean", cell, 2, 2, 3)(encoder_output(cell == "lstm"))
    assert state.hidden.tolist() == layers(torch.tensor([[2.0, 3.0], [5.0, -1.0]])).tolist()
    assert state.cell is None if cell == "gru" else (state.cell == 0).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_linear_is_tanh_of_projection(cell: str) -> None:
    bridge = Bridge("linear", cell, 2, 3, 3)
    with torch.no_grad():
        for projection in bridge.projections:
            projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
            projection.bias.fill_(0.5)
    state = bridge(encoder_output(cell == "lstm"))
    top = torch.tensor([[0.5, -0.5], [0.1, 0.2]])
    expected = torch.tanh(torch.stack([top[:, 0], 2 * top[:, 1], top.sum(1)], dim=1) + 0.5)
    torch.testing.assert_close(state.hidden, layers(expected))
    if cell == "lstm":
        cell_expected = torch.tanh(torch.stack([-top[:, 0], -2 * top[:, 1], -top.sum(1)], 1) + 0.5)
        torch.testing.assert_close(state.cell, layers(cell_expected))
    assert len(bridge.projections) == (2 if cell == "lstm" else 1)


@pytest.mark.parametrize("kind", ["last", "mean"])
def test_size_mismatch_names_sizes_and_suggests_linear(kind: str) -> None:
    with pytest.raises(
        ValueError, match=rf"bridge={kind}.*encoder_size=4.*decoder_size=6.*bridge=linear"
    ):
        Bridge(kind, "gru", 4, 6, 1)
