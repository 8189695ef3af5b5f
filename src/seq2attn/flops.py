"""Model FLOPs counted from a Seq2Seq's shapes, for throughput as a fraction of machine peak.

Only matrix products are counted, 2 FLOPs per multiply-add, the convention of
``torch.utils.flop_counter``; element-wise work (gates, tanh, softmax) is left out, as are
per-sentence terms (the bridge). The forward pass costs

    F = n_src * f_src + n_tgt * f_tgt + n_pairs * f_pair,   n_pairs = sum_i S_i T_i

with f_src the encoder and the scorer's key preparation per source token, f_tgt the decoder
RNN, the scorer's query part, the readout and the output layer per target position, and f_pair
the score and context of one (target, source) pair. Each scorer counts its own part
(``Scorer.flops``). A training step costs 3 F (the backward
pass is two products per forward product).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from seq2attn.models.decoders import BahdanauDecoder, LuongDecoder, NoAttentionDecoder
from seq2attn.models.scorers import TokenCosts
from seq2attn.models.seq2seq import Seq2Seq

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


@dataclass(frozen=True)
class Flops:
    """Forward FLOPs of a batch of tokens, and the training step's (3x forward)."""

    forward: float

    @property
    def training(self) -> float:
        return 3 * self.forward


def rnn_flops_per_token(rnn: nn.RNNBase) -> int:
    """2 * gates * H * (I + H) per layer and direction, for one position."""
    gates, directions = GATES[rnn.mode], 2 if rnn.bidirectional else 1
    total, input_size = 0, rnn.input_size
    for _ in range(rnn.num_layers):
        total += directions * 2 * gates * rnn.hidden_size * (input_size + rnn.hidden_size)
        input_size = rnn.hidden_size * directions
    return total


def linear_flops(layer: nn.Module) -> int:
    """2 * in * out for an nn.Linear, 0 for anything else (e.g. nn.Identity)."""
    return 2 * layer.in_features * layer.out_features if isinstance(layer, nn.Linear) else 0


def token_costs(model: Seq2Seq) -> TokenCosts:
    """Per-token forward FLOPs of ``model``."""
    decoder = model.decoder
    source = rnn_flops_per_token(model.encoder.rnn)
    target = rnn_flops_per_token(decoder.rnn)
    target += linear_flops(model.output_projection) + linear_flops(model.output_layer)
    pair = 0
    if isinstance(decoder, NoAttentionDecoder | BahdanauDecoder):
        target += linear_flops(decoder.readout)
    if isinstance(decoder, LuongDecoder):
        target += linear_flops(decoder.W_c)
    if isinstance(decoder, BahdanauDecoder | LuongDecoder):
        scorer = decoder.attention.scorer.flops()
        source += scorer.source
        target += scorer.target
        pair = scorer.pair + 2 * model.encoder.output_size  # score + context
    return TokenCosts(source=source, target=target, pair=pair)


def count_flops(model: Seq2Seq, source_tokens: int, target_tokens: int, pairs: int) -> Flops:
    """Forward FLOPs of encoding ``source_tokens`` and decoding ``target_tokens`` positions,
    with ``pairs`` = sum over sentences of source length x target length (attention work)."""
    costs = token_costs(model)
    return Flops(
        forward=source_tokens * costs.source + target_tokens * costs.target + pairs * costs.pair
    )
