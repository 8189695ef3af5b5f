"""Seq2Seq: embeddings, encoder, bridge, decoder and output layer.

p(y_t | y_<t, x) = softmax(W_o o_t + b_o), where o_t are the decoder's output features. With
``tie_embeddings`` W_o is the target embedding matrix (Press & Wolf, 2017), preceded by a
linear map H -> E when the hidden and embedding sizes differ, and initialised N(0, 1/E).
With ``share_embeddings`` the source and target embeddings are one matrix (one vocabulary for
both sides; with ``tie_embeddings`` too, the three-way tying of Press & Wolf, 2017).
``source_word_dropout`` / ``target_word_dropout`` drop whole input embeddings while training
(models/word_dropout.py), before the element-wise ``dropout``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seq2attn.models.bridge import Bridge, BridgeKind
from seq2attn.models.decoders import (
    BahdanauDecoder,
    DecoderState,
    LuongDecoder,
    Memory,
    NoAttentionDecoder,
    stack_optional,
)
from seq2attn.models.encoder import Cell, RNNEncoder
from seq2attn.models.scorers import Scorer
from seq2attn.models.word_dropout import WordDropout

AttentionKind = Literal["none", "bahdanau", "luong"]


@dataclass
class Seq2SeqOutput:
    """logits (B, T, V), attention (B, T, S) or None, decoder_inputs (B, T) tokens fed.

    With ``compute_logits=False`` a parallel forward leaves logits None and returns the output
    layer's input (B, T, H') as ``features``, for a loss fused with the output layer.
    """

    logits: Tensor | None
    attention: Tensor | None
    decoder_inputs: Tensor
    features: Tensor | None = None


def build_decoder(
    attention: AttentionKind,
    cell: Cell,
    embedding_size: int,
    hidden_size: int,
    memory_size: int,
    num_layers: int,
    dropout: float,
    scorer: Callable[..., Scorer],
    input_feeding: bool,
) -> NoAttentionDecoder | BahdanauDecoder | LuongDecoder:
    """The decoder class for an ``attention`` wiring."""
    if input_feeding and attention != "luong":
        raise ValueError(f"input_feeding=True needs attention=luong, got attention={attention!r}")
    sizes = (cell, embedding_size, hidden_size, memory_size, num_layers, dropout)
    if attention == "none":
        return NoAttentionDecoder(*sizes)
    if attention == "bahdanau":
        return BahdanauDecoder(*sizes, scorer)
    if attention == "luong":
        return LuongDecoder(*sizes, scorer, input_feeding)
    raise ValueError(f"attention must be one of none, bahdanau, luong; got {attention!r}")


class Seq2Seq(nn.Module):
    """Attention-based RNN encoder-decoder.

    ``hidden_size`` is the decoder's; ``encoder_hidden_size`` (per direction) defaults to
    hidden_size // 2 when bidirectional, else hidden_size, so the memory has the decoder's size.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        cell: Cell,
        attention: AttentionKind,
        scorer: Callable[..., Scorer],
        input_feeding: bool,
        embedding_size: int,
        hidden_size: int,
        encoder_hidden_size: int | None,
        encoder_layers: int,
        decoder_layers: int,
        bidirectional: bool,
        dropout: float,
        bridge: BridgeKind,
        tie_embeddings: bool,
        reverse_source: bool,
        share_embeddings: bool = False,
        param_init: float | None = None,
        source_word_dropout: float = 0.0,
        target_word_dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                "share_embeddings needs one vocabulary for both sides, got source "
                f"{src_vocab_size} and target {tgt_vocab_size} pieces"
            )
        if encoder_hidden_size is None:
            encoder_hidden_size = hidden_size // 2 if bidirectional else hidden_size
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=pad_id)
        self.tgt_embedding = (
            self.src_embedding
            if share_embeddings
            else nn.Embedding(tgt_vocab_size, embedding_size, padding_idx=pad_id)
        )
        self.dropout = nn.Dropout(dropout)
        self.source_word_dropout = WordDropout(source_word_dropout)
        self.target_word_dropout = WordDropout(target_word_dropout)
        self.encoder = RNNEncoder(
            cell,
            embedding_size,
            encoder_hidden_size,
            encoder_layers,
            bidirectional,
            dropout,
            reverse_source,
        )
        memory_size = self.encoder.output_size
        self.bridge = Bridge(bridge, cell, memory_size, hidden_size, decoder_layers)
        self.decoder = build_decoder(
            attention,
            cell,
            embedding_size,
            hidden_size,
            memory_size,
            decoder_layers,
            dropout,
            scorer,
            input_feeding,
        )
        project = tie_embeddings and hidden_size != embedding_size
        self.output_projection = (
            nn.Linear(hidden_size, embedding_size, bias=False) if project else nn.Identity()
        )
        self.output_layer = nn.Linear(
            embedding_size if tie_embeddings else hidden_size, tgt_vocab_size
        )
        if tie_embeddings:
            # N(0, 1) rows, nn.Embedding's default, would start the logits 30x larger than an
            # untied output layer's and leave Adam's fixed-size steps relatively tiny; E^-1/2
            # gives both roles the scale of a Linear layer (as fairseq does)
            nn.init.normal_(self.tgt_embedding.weight, std=embedding_size**-0.5)
            with torch.no_grad():
                self.tgt_embedding.weight[pad_id].zero_()
            self.output_layer.weight = self.tgt_embedding.weight
        if param_init is not None:
            tables = {id(self.src_embedding.weight), id(self.tgt_embedding.weight)}
            for parameter in self.parameters():
                if id(parameter) not in tables:
                    nn.init.uniform_(parameter, -param_init, param_init)

    @property
    def attends(self) -> bool:
        """Whether ``step`` returns attention weights (every wiring but ``attention=none``)."""
        return not isinstance(self.decoder, NoAttentionDecoder)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """Encode src (B, S) with src_lengths (B,); returns the memory and the initial state."""
        enc = self.encoder(self._embed_source(src), src_lengths)
        return self.decoder.init_memory(enc), self.bridge(enc)

    def step(
        self, prev_tokens: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step from prev_tokens (B,): logits (B, V), new state, attention (B, S)."""
        features, state, attention = self.step_features(prev_tokens, state, memory)
        return self.output_layer(features), state, attention

    def step_features(
        self, prev_tokens: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """``step`` up to the output layer: its input (B, D), the new state, attention (B, S)."""
        out = self.decoder.step(self._embed_target(prev_tokens), state, memory)
        return self.output_projection(out.features), out.state, out.attention

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        teacher_forcing_ratio: float = 1.0,
        sample: bool = False,
        two_pass: bool = False,
        compute_logits: bool = True,
    ) -> Seq2SeqOutput:
        """Logits for tgt_in (B, T) = [BOS y_1 .. y_{T-1}].

        With teacher_forcing_ratio < 1 each position t >= 1 is fed the gold token with that
        probability (per token) and otherwise the model's previous prediction: the argmax, or
        a sample from the softmax when ``sample``. Position 0 always gets the gold BOS.
        ``two_pass`` takes the predictions from a teacher-forced first pass instead of the
        step loop (Duckworth et al., 2019); it needs a decoder with a parallel path.
        ``compute_logits=False`` skips the output layer where the path allows (see
        Seq2SeqOutput); the step loop always computes logits, it feeds on them.
        """
        memory, state = self.encode(src, src_lengths)
        if teacher_forcing_ratio >= 1.0:
            return self._teacher_forced(tgt_in, state, memory, compute_logits)
        if two_pass:
            return self._two_pass_sampling(
                tgt_in, state, memory, teacher_forcing_ratio, sample, compute_logits
            )
        return self._scheduled_sampling(tgt_in, state, memory, teacher_forcing_ratio, sample)

    def _teacher_forced(
        self, tgt_in: Tensor, state: DecoderState, memory: Memory, compute_logits: bool = True
    ) -> Seq2SeqOutput:
        out = self.decoder(self._embed_target(tgt_in), state, memory)
        features = self.output_projection(out.features)
        if not compute_logits:
            return Seq2SeqOutput(None, out.attention, tgt_in, features)
        return Seq2SeqOutput(self.output_layer(features), out.attention, tgt_in)

    def _two_pass_sampling(
        self,
        tgt_in: Tensor,
        state: DecoderState,
        memory: Memory,
        ratio: float,
        sample: bool,
        compute_logits: bool = True,
    ) -> Seq2SeqOutput:
        """Parallel scheduled sampling: predictions of a teacher-forced pass (no gradient) are
        mixed into the gold inputs per token, then a second parallel pass is trained on them."""
        if not self.decoder.parallel:
            raise ValueError(
                "two-pass scheduled sampling needs a parallel decoder: attention=luong without "
                "input feeding, or attention=none"
            )
        with torch.no_grad():
            first = self._teacher_forced(tgt_in, state, memory).logits
            assert first is not None
            predicted = _predict(first.flatten(0, 1), sample).view_as(tgt_in)
        use_gold = torch.rand(tgt_in[:, 1:].shape, device=tgt_in.device) < ratio
        mixed = tgt_in.clone()
        mixed[:, 1:] = torch.where(use_gold, tgt_in[:, 1:], predicted[:, :-1])
        return self._teacher_forced(mixed, state, memory, compute_logits)

    def _scheduled_sampling(
        self, tgt_in: Tensor, state: DecoderState, memory: Memory, ratio: float, sample: bool
    ) -> Seq2SeqOutput:
        """Step loop feeding gold or predicted tokens (Bengio et al., 2015)."""
        tokens = tgt_in[:, 0]
        fed, logits, attention = [], [], []
        for t in range(tgt_in.size(1)):
            fed.append(tokens)
            step_logits, state, step_attention = self.step(tokens, state, memory)
            logits.append(step_logits)
            attention.append(step_attention)
            if t + 1 < tgt_in.size(1):
                predicted = _predict(step_logits.detach(), sample)
                if ratio <= 0.0:  # free running: no draw, so the random stream is left as is
                    tokens = predicted
                    continue
                use_gold = torch.rand(tokens.shape, device=tokens.device) < ratio
                tokens = torch.where(use_gold, tgt_in[:, t + 1], predicted)
        return Seq2SeqOutput(
            logits=torch.stack(logits, dim=1),
            attention=stack_optional(attention),
            decoder_inputs=torch.stack(fed, dim=1),
        )

    def _embed_source(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.source_word_dropout(self.src_embedding(tokens)))

    def _embed_target(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.target_word_dropout(self.tgt_embedding(tokens)))


def _predict(logits: Tensor, sample: bool) -> Tensor:
    """Next tokens (B,) from logits (B, V): argmax, or a draw from softmax(logits)."""
    if sample:
        return torch.multinomial(logits.float().softmax(dim=-1), 1).squeeze(1)
    return logits.argmax(dim=-1)
