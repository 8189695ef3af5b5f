"""Bridge: the initial decoder state s_0 computed from the encoder.

- zero:   s_0 = 0
- last:   s_0 = h_enc, the encoder's final state (top layer, directions concatenated)
- mean:   s_0 = mean_s h_s over the real source positions
- linear: s_0 = tanh(W h_enc + b)

The top encoder layer's vector initialises every decoder layer, so encoder and decoder may
have different depths. For an LSTM the cell state is 0 (zero, mean), the encoder's final
top-layer cell (last) or tanh(W_c c_enc + b_c) (linear).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seq2attn.models.decoders import DecoderState
from seq2attn.models.encoder import Cell, EncoderOutput

BridgeKind = Literal["zero", "last", "mean", "linear"]


class Bridge(nn.Module):
    """Maps an EncoderOutput to the decoder's initial DecoderState, hidden (L, B, H)."""

    def __init__(
        self,
        kind: BridgeKind,
        cell: Cell,
        encoder_size: int,
        decoder_size: int,
        decoder_layers: int,
    ) -> None:
        super().__init__()
        if kind not in ("zero", "last", "mean", "linear"):
            raise ValueError(f"bridge must be one of zero, last, mean, linear; got {kind!r}")
        if kind in ("last", "mean") and encoder_size != decoder_size:
            raise ValueError(
                f"bridge={kind} needs encoder_size == decoder_size, got encoder_size="
                f"{encoder_size} and decoder_size={decoder_size}; use bridge=linear to project"
            )
        self.kind = kind
        self.is_lstm = cell == "lstm"
        self.decoder_size = decoder_size
        self.decoder_layers = decoder_layers
        # linear: W for the hidden state and, for an LSTM, W_c for the cell state.
        n_projections = (2 if self.is_lstm else 1) if kind == "linear" else 0
        self.projections = nn.ModuleList(
            nn.Linear(encoder_size, decoder_size) for _ in range(n_projections)
        )

    def forward(self, enc: EncoderOutput) -> DecoderState:
        states = [state.unsqueeze(0).repeat(self.decoder_layers, 1, 1) for state in self._init(enc)]
        return DecoderState(*states)  # hidden (L, B, H) and, for an LSTM, cell (L, B, H)

    def _init(self, enc: EncoderOutput) -> list[Tensor]:
        """[hidden] or, for an LSTM, [hidden, cell] of one decoder layer, each (B, H)."""
        zeros = enc.memory.new_zeros(enc.memory.size(0), self.decoder_size)
        final = [state[-1] for state in (enc.final_hidden, enc.final_cell) if state is not None]
        if self.kind == "zero":
            states = [zeros, zeros]
        elif self.kind == "mean":
            states = [enc.summary, zeros]
        elif self.kind == "last":
            states = final
        else:
            states = [
                torch.tanh(projection(state))
                for projection, state in zip(self.projections, final, strict=True)
            ]
        return states[: 2 if self.is_lstm else 1]
