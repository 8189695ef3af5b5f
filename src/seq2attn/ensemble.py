"""Ensemble decoding: several trained models searched as one.

At every step each model m gives next-token probabilities p_m(y | y_<t, X); the ensemble scores

    log p(y | y_<t, X) = log (1/M) sum_m p_m(y | y_<t, X)

(the mean of the probabilities, as OpenNMT-py and fairseq ensemble), and its attention is the
mean of the members' attention weights. ``Ensemble`` has ``Seq2Seq``'s ``encode``/``step`` API,
so greedy and beam search run it unchanged; the step returns log-probabilities in place of logits
(their log-softmax is themselves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from seq2attn.models.decoders import DecoderState, Memory
from seq2attn.models.seq2seq import Seq2Seq


@dataclass
class EnsembleMemory:
    """One encoder memory per member."""

    members: tuple[Memory, ...]

    def index_select(self, index: Tensor) -> EnsembleMemory:
        """Rows ``index`` (N,) of every member's batch."""
        return EnsembleMemory(tuple(memory.index_select(index) for memory in self.members))


@dataclass
class EnsembleState:
    """One decoder state per member."""

    members: tuple[DecoderState, ...]

    def index_select(self, index: Tensor) -> EnsembleState:
        """Rows ``index`` (N,) of every member's batch."""
        return EnsembleState(tuple(state.index_select(index) for state in self.members))


class Ensemble(nn.Module):
    """Models that share the source and target vocabularies, decoded as one."""

    def __init__(self, models: Sequence[Seq2Seq]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        vocab_sizes = {model.output_layer.out_features for model in models}
        if len(vocab_sizes) > 1:
            raise ValueError(
                "ensemble members must share the target vocabulary, got sizes "
                f"{sorted(vocab_sizes)}"
            )
        self.models = nn.ModuleList(models)

    @property
    def members(self) -> list[Seq2Seq]:
        """The models, in the order given."""
        return [cast(Seq2Seq, model) for model in self.models]

    @property
    def attends(self) -> bool:
        """Whether ``step`` returns attention weights: only when every member's does."""
        return all(model.attends for model in self.members)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EnsembleMemory, EnsembleState]:
        """Every member encodes src (B, S); their memories and initial states, in member order."""
        encoded = [model.encode(src, src_lengths) for model in self.members]
        return (
            EnsembleMemory(tuple(memory for memory, _ in encoded)),
            EnsembleState(tuple(state for _, state in encoded)),
        )

    def step(
        self, prev_tokens: Tensor, state: EnsembleState, memory: EnsembleMemory
    ) -> tuple[Tensor, EnsembleState, Tensor | None]:
        """log of the members' mean next-token probabilities (B, V), the new states, and the
        mean attention (B, S) (None when a member has no attention)."""
        log_probs, states, attentions = [], [], []
        for model, member_state, member_memory in zip(
            self.members, state.members, memory.members, strict=True
        ):
            logits, new_state, attention = model.step(prev_tokens, member_state, member_memory)
            log_probs.append(logits.float().log_softmax(dim=-1))
            states.append(new_state)
            attentions.append(attention)
        mean = torch.stack(log_probs).logsumexp(dim=0) - math.log(len(log_probs))
        attention = (
            None
            if any(a is None for a in attentions)
            else torch.stack([a.float() for a in attentions if a is not None]).mean(dim=0)
        )
        return mean, EnsembleState(tuple(states)), attention
