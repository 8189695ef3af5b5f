"""Recurrent encoder: h_1..h_S = RNN(x_1..x_S), optionally bidirectional and on reversed input.

A bidirectional encoder concatenates the directions, h_s = [h_s(fwd); h_s(bwd)]. With
``reverse_source`` (Sutskever et al., 2014) the real tokens of each sentence are read in
reverse order; the memory is flipped back so that memory[:, i] still belongs to source token i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2attn.models.gru import GRU
from seq2attn.models.length_shaped import fp32_on_cpu

Cell = Literal["rnn", "gru", "lstm"]
_RNN_CLASSES: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "gru": GRU, "lstm": nn.LSTM}


def make_rnn(
    cell: Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """A batch-first RNN/GRU/LSTM with ``dropout`` between stacked layers (the GRU is
    :class:`seq2attn.models.gru.GRU`, nn.GRU with its own training pass on a CPU)."""
    if cell not in _RNN_CLASSES:
        raise ValueError(f"cell must be one of {sorted(_RNN_CLASSES)}, got {cell!r}")
    return _RNN_CLASSES[cell](
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,  # torch warns about dropout on one layer
        bidirectional=bidirectional,
    )


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first lengths[b] positions of each row of x (B, S, ...); padding stays put."""
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, S)
    lengths = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, S)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


@dataclass
class EncoderOutput:
    """memory (B, S, Hk), zero at padding; final_hidden (L, B, Hk) and, for LSTM, final_cell
    (L, B, Hk) with the directions of each layer concatenated; src_pad_mask (B, S) True at pad.
    """

    memory: Tensor
    final_hidden: Tensor
    final_cell: Tensor | None
    src_pad_mask: Tensor

    @property
    def summary(self) -> Tensor:
        """Mean of the memory over real source positions, (B, Hk)."""
        lengths = (~self.src_pad_mask).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        return self.memory.sum(dim=1) / lengths.to(self.memory.dtype)


class RNNEncoder(nn.Module):
    """Packed (multi-layer, optionally bidirectional) RNN over source embeddings.

    ``hidden_size`` is per direction; ``output_size`` = hidden_size * directions.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        reverse_source: bool,
    ) -> None:
        super().__init__()
        self.rnn = make_rnn(cell, input_size, hidden_size, num_layers, dropout, bidirectional)
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.reverse_source = reverse_source
        self.output_size = hidden_size * self.num_directions

    def forward(self, src_emb: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode src_emb (B, S, E) whose rows have src_lengths (B,) real positions."""
        source_len = src_emb.size(1)
        positions = torch.arange(source_len, device=src_emb.device)
        src_pad_mask = positions.unsqueeze(0) >= src_lengths.to(src_emb.device).unsqueeze(1)
        if self.reverse_source:
            src_emb = reverse_padded(src_emb, src_lengths)
        packed = pack_padded_sequence(
            src_emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        with fp32_on_cpu(src_emb):  # a packed batch's size follows its lengths
            outputs, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source_len)
        if self.reverse_source:
            memory = reverse_padded(memory, src_lengths)
        hidden, cell = final if isinstance(final, tuple) else (final, None)
        return EncoderOutput(
            memory=memory,
            final_hidden=self._merge_directions(hidden),
            final_cell=None if cell is None else self._merge_directions(cell),
            src_pad_mask=src_pad_mask,
        )

    def _merge_directions(self, state: Tensor) -> Tensor:
        """(L * D, B, H) -> (L, B, D * H), directions of each layer concatenated."""
        _, batch, hidden = state.shape
        state = state.view(self.num_layers, self.num_directions, batch, hidden)
        return state.permute(0, 2, 1, 3).reshape(self.num_layers, batch, -1)
