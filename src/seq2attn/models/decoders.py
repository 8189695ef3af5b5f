"""Recurrent decoders, one class per attention wiring.

- NoAttentionDecoder: Cho et al. (2014), a fixed source summary c at every step.
- BahdanauDecoder: Bahdanau et al. (2015), attend from s_{t-1} before the RNN step.
- LuongDecoder: Luong et al. (2015), attend from h_t after the RNN step, optional input feeding.

Each exposes ``init_memory(enc)`` (key-only attention work, once per batch),
``step(prev_emb, state, memory)`` for one target position and ``forward(tgt_emb, state, memory)``
for a teacher-forced sequence. ``forward`` runs one batched RNN call where the wiring allows
(NoAttention, Luong without input feeding); Bahdanau's loops over the recurrence and computes its
readout for all positions after the loop; Luong with input feeding loops over ``step``. A single
position goes through the RNN's cells directly, without the module call. ``compile_loop()``
compiles the function such a loop runs at each position (``torch.compile``).

Shapes: B batch, S source, T target, E embedding, H decoder hidden, Hk memory, L layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seq2attn.models.attention import Attention
from seq2attn.models.encoder import Cell, EncoderOutput, make_rnn
from seq2attn.models.scorers import Scorer

# the one-step function of each nn.RNNBase mode without a cell state (LSTM's is lstm_cell)
_CELLS = {"GRU": torch.gru_cell, "RNN_TANH": torch.rnn_tanh_cell, "RNN_RELU": torch.rnn_relu_cell}


def _select(x: Tensor | None, dim: int, index: Tensor) -> Tensor | None:
    return None if x is None else x.index_select(dim, index)


def stack_optional(steps: list[Tensor | None], dim: int = 1) -> Tensor | None:
    """torch.stack of per-step tensors, or None when the steps carry none (no attention)."""
    present = [x for x in steps if x is not None]
    return torch.stack(present, dim=dim) if present and len(present) == len(steps) else None


@dataclass
class DecoderState:
    """hidden (L, B, H); cell (L, B, H) for an LSTM; input_feed (B, H) Luong's h~_{t-1}."""

    hidden: Tensor
    cell: Tensor | None = None
    input_feed: Tensor | None = None

    @classmethod
    def from_rnn(
        cls, rnn_state: Tensor | tuple[Tensor, Tensor], input_feed: Tensor | None = None
    ) -> DecoderState:
        """Wrap the state returned by nn.RNN/GRU (a tensor) or nn.LSTM (a pair)."""
        if isinstance(rnn_state, tuple):
            return cls(rnn_state[0], rnn_state[1], input_feed)
        return cls(rnn_state, None, input_feed)

    @property
    def rnn_state(self) -> Tensor | tuple[Tensor, Tensor]:
        """The state in the form nn.RNN/GRU/LSTM take it."""
        return self.hidden if self.cell is None else (self.hidden, self.cell)

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows ``index`` (N,) of the batch, e.g. to expand or reorder beams."""
        return DecoderState(
            hidden=self.hidden.index_select(1, index),
            cell=_select(self.cell, 1, index),
            input_feed=_select(self.input_feed, 0, index),
        )


@dataclass
class Memory:
    """Encoder memory as the decoder sees it: keys (B, S, Hk), the scorer's prepared keys
    (None without attention), src_pad_mask (B, S) True at padding, summary (B, Hk) mean of keys.
    """

    keys: Tensor
    prepared: Tensor | None
    src_pad_mask: Tensor
    summary: Tensor

    def index_select(self, index: Tensor) -> Memory:
        """Rows ``index`` (N,) of the batch."""
        return Memory(
            keys=self.keys.index_select(0, index),
            prepared=_select(self.prepared, 0, index),
            src_pad_mask=self.src_pad_mask.index_select(0, index),
            summary=self.summary.index_select(0, index),
        )


@dataclass
class StepOutput:
    """features (B, H) for the output layer, the new state, attention (B, S) or None."""

    features: Tensor
    state: DecoderState
    attention: Tensor | None


@dataclass
class DecoderOutput:
    """features (B, T, H), attention (B, T, S) or None, and the final state."""

    features: Tensor
    attention: Tensor | None
    state: DecoderState

    def only_step(self) -> StepOutput:
        """The StepOutput of a single-position (T = 1) output."""
        attention = None if self.attention is None else self.attention[:, 0]
        return StepOutput(self.features[:, 0], self.state, attention)


class _RNNDecoder(nn.Module):
    """Shared parts: the RNN, output dropout and the reference loop over ``step``.

    ``parallel`` tells whether teacher-forced ``forward`` runs all positions at once.
    """

    parallel = False

    def __init__(
        self, cell: Cell, input_size: int, hidden_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.rnn = make_rnn(cell, input_size, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden_size
        self._compiled: Callable[..., Any] | None = None  # see compile_loop

    def init_memory(self, enc: EncoderOutput) -> Memory:
        return Memory(enc.memory, None, enc.src_pad_mask, enc.summary)

    def compile_loop(self) -> bool:
        """Compile the function that teacher-forced ``forward`` runs at each target position in
        training (``torch.compile`` with dynamic shapes, so batches and sources of new sizes
        reuse the compiled code), which fuses its element-wise work into fewer kernels; the
        loss of validation and test (no gradients) and decoding (``step``) stay eager. False
        where ``forward`` has no such loop. Clears everything compiled before in the process."""
        if self.parallel:
            return False
        # Dynamo keeps what it compiled per function, across instances: a model built before in
        # this process (a multirun's earlier job) would leave its shapes' guards to this one
        torch.compiler.reset()
        compiled = torch.compile(self._position, dynamic=True)
        # the step reads the RNN module's weights (never its forward); Dynamo stops tracing at
        # any RNN module unless allowed, and would leave the cell out of the graph
        self._compiled = torch._dynamo.config.patch(allow_rnn=True)(compiled)
        return True

    @property
    def _position(self) -> Callable[..., Any]:
        """What the teacher-forced loop calls at each position."""
        return self.step

    def _loop_function(self) -> Callable[..., Any]:
        """``_position``, compiled when ``compile_loop`` was called and gradients are taken."""
        if self._compiled is not None and self.training and torch.is_grad_enabled():
            return self._compiled
        return self._position

    def step(self, prev_emb: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        raise NotImplementedError

    def forward(self, tgt_emb: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced decoding of tgt_emb (B, T, E), one ``step`` per position."""
        steps = []
        step = self._loop_function()
        for prev_emb in tgt_emb.unbind(dim=1):
            out = step(prev_emb, state, memory)
            state = out.state
            steps.append(out)
        return DecoderOutput(
            features=torch.stack([out.features for out in steps], dim=1),
            attention=stack_optional([out.attention for out in steps]),
            state=state,
        )

    def _run_rnn(self, inputs: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Top-layer outputs (B, T, H) of the RNN over inputs (B, T, I), and the new state.

        A single position (T = 1) goes through the cells directly (``_step_rnn``)."""
        if inputs.size(1) == 1:
            output, state = self._step_rnn(inputs[:, 0], state)
            return output.unsqueeze(1), state
        outputs, rnn_state = self.rnn(inputs, state.rnn_state)
        return outputs, DecoderState.from_rnn(rnn_state, state.input_feed)

    def _step_rnn(self, inputs: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One position through the stacked cells of ``self.rnn``: inputs (B, I) -> the top
        layer's output (B, H) and the new state. The math of ``self.rnn`` on a length-1
        sequence (dropout between layers when training) without the module's per-call work."""
        rnn = self.rnn
        hidden, cells = [], []
        for layer, weights in enumerate(rnn.all_weights):  # w_ih, w_hh, b_ih, b_hh per layer
            if state.cell is None:
                inputs = _CELLS[rnn.mode](inputs, state.hidden[layer], *weights)
            else:
                inputs, cell = torch.lstm_cell(
                    inputs, (state.hidden[layer], state.cell[layer]), *weights
                )
                cells.append(cell)
            hidden.append(inputs)
            if layer < rnn.num_layers - 1 and rnn.dropout and self.training:
                inputs = F.dropout(inputs, rnn.dropout, training=True)
        new_cell = torch.stack(cells) if cells else None
        return inputs, DecoderState(torch.stack(hidden), new_cell, state.input_feed)


class NoAttentionDecoder(_RNNDecoder):
    """Cho et al. (2014) decoder with a fixed summary c of the source.

    s_t = RNN([y_{t-1}; c], s_{t-1});  o_t = tanh(W [s_t; c; y_{t-1}]),
    where c = Memory.summary is the mean of the memory over real source positions.
    Teacher-forced ``forward`` is one batched RNN call.
    """

    def __init__(
        self,
        cell: Cell,
        embedding_size: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__(cell, embedding_size + memory_size, hidden_size, num_layers, dropout)
        self.readout = nn.Linear(hidden_size + memory_size + embedding_size, hidden_size)
        self.parallel = True

    def step(self, prev_emb: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        return self.forward(prev_emb.unsqueeze(1), state, memory).only_step()

    def forward(self, tgt_emb: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        summary = memory.summary.unsqueeze(1).expand(-1, tgt_emb.size(1), -1)  # (B, T, Hk)
        outputs, state = self._run_rnn(torch.cat([tgt_emb, summary], dim=-1), state)
        readout = torch.tanh(self.readout(torch.cat([outputs, summary, tgt_emb], dim=-1)))
        return DecoderOutput(self.dropout(readout), None, state)


class _AttentionDecoder(_RNNDecoder):
    """An RNN decoder with an Attention built from a scorer factory."""

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int,
        dropout: float,
        scorer: Callable[..., Scorer],
    ) -> None:
        super().__init__(cell, input_size, hidden_size, num_layers, dropout)
        self.attention = Attention(scorer(query_size=hidden_size, key_size=memory_size))

    def init_memory(self, enc: EncoderOutput) -> Memory:
        prepared = self.attention.prepare(enc.memory)
        return Memory(enc.memory, prepared, enc.src_pad_mask, enc.summary)


class BahdanauDecoder(_AttentionDecoder):
    """Bahdanau et al. (2015): attend with the previous state, then step the RNN.

    c_t = attention(s_{t-1}, h);  s_t = RNN([y_{t-1}; c_t], s_{t-1});
    o_t = tanh(W [s_t; c_t; y_{t-1}]).  The query s_{t-1} is the top layer's state.
    """

    def __init__(
        self,
        cell: Cell,
        embedding_size: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int,
        dropout: float,
        scorer: Callable[..., Scorer],
    ) -> None:
        super().__init__(
            cell,
            embedding_size + memory_size,
            hidden_size,
            memory_size,
            num_layers,
            dropout,
            scorer,
        )
        self.readout = nn.Linear(hidden_size + memory_size + embedding_size, hidden_size)

    def step(self, prev_emb: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        output, context, state, weights = self._recur(prev_emb, state, memory)
        readout = torch.tanh(self.readout(torch.cat([output, context, prev_emb], dim=-1)))
        return StepOutput(self.dropout(readout), state, weights)

    def forward(self, tgt_emb: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """Teacher-forced decoding of tgt_emb (B, T, E): the loop computes s_t and c_t, and the
        readout of all T positions is one product after it (it feeds nothing back)."""
        outputs, contexts, weights = [], [], []
        recur = self._loop_function()
        for prev_emb in tgt_emb.unbind(dim=1):
            output, context, state, step_weights = recur(prev_emb, state, memory)
            outputs.append(output)
            contexts.append(context)
            weights.append(step_weights)
        features = torch.cat([torch.stack(outputs, 1), torch.stack(contexts, 1), tgt_emb], -1)
        readout = torch.tanh(self.readout(features))
        return DecoderOutput(self.dropout(readout), torch.stack(weights, 1), state)

    @property
    def _position(self) -> Callable[..., Any]:
        return self._recur

    def _recur(
        self, prev_emb: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, Tensor, DecoderState, Tensor]:
        """c_t from s_{t-1}, then s_t: the top layer's output (B, H), c_t (B, Hk), the new
        state and the attention weights (B, S)."""
        query = state.hidden[-1].unsqueeze(1)  # s_{t-1}: (B, 1, H)
        attn = self.attention(query, memory.keys, memory.prepared, memory.src_pad_mask)
        context = attn.context[:, 0]  # (B, Hk)
        output, state = self._step_rnn(torch.cat([prev_emb, context], dim=-1), state)
        return output, context, state, attn.weights[:, 0]


class LuongDecoder(_AttentionDecoder):
    """Luong et al. (2015): step the RNN, then attend with the current state.

    h_t = RNN(x_t, h_{t-1});  c_t = attention(h_t, h);  h~_t = tanh(W_c [c_t; h_t]).
    With input feeding x_t = [y_{t-1}; h~_{t-1}] (h~_0 = 0, carried in state.input_feed),
    otherwise x_t = y_{t-1} and teacher-forced ``forward`` is one RNN call plus one batched
    attention over all T queries (the same code ``step`` runs with T = 1).
    """

    def __init__(
        self,
        cell: Cell,
        embedding_size: int,
        hidden_size: int,
        memory_size: int,
        num_layers: int,
        dropout: float,
        scorer: Callable[..., Scorer],
        input_feeding: bool,
    ) -> None:
        input_size = embedding_size + (hidden_size if input_feeding else 0)
        super().__init__(cell, input_size, hidden_size, memory_size, num_layers, dropout, scorer)
        self.input_feeding = input_feeding
        self.parallel = not input_feeding
        self.W_c = nn.Linear(memory_size + hidden_size, hidden_size, bias=False)

    def step(self, prev_emb: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        inputs = prev_emb.unsqueeze(1)  # (B, 1, E)
        if self.input_feeding:
            feed = state.input_feed
            if feed is None:
                feed = prev_emb.new_zeros(prev_emb.size(0), self.output_size)
            inputs = torch.cat([inputs, feed.unsqueeze(1)], dim=-1)
        return self._decode(inputs, state, memory).only_step()

    def forward(self, tgt_emb: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        if self.input_feeding:
            return super().forward(tgt_emb, state, memory)
        return self._decode(tgt_emb, state, memory)

    def _decode(self, inputs: Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
        """RNN over inputs (B, T, I), then attention and h~_t for all T positions at once."""
        outputs, state = self._run_rnn(inputs, state)  # h_t: (B, T, H)
        attn = self.attention(outputs, memory.keys, memory.prepared, memory.src_pad_mask)
        attentional = torch.tanh(self.W_c(torch.cat([attn.context, outputs], dim=-1)))
        if self.input_feeding:
            state = replace(state, input_feed=attentional[:, -1])
        return DecoderOutput(self.dropout(attentional), attn.weights, state)
