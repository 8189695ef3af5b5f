"""FLOPs counted from the shapes equal what torch's FLOP counter sees in a forward pass."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from seq2attn.flops import count_flops
from seq2attn.models import scorers
from seq2attn.models.seq2seq import Seq2Seq

SCORERS = {
    "dot": functools.partial(scorers.DotScorer, project_keys=True),
    "general": scorers.GeneralScorer,
    "concat": scorers.ConcatScorer,
    "additive": scorers.AdditiveScorer,
    "mlp": functools.partial(scorers.MLPScorer, hidden_sizes=(7, 5)),
    "location": functools.partial(scorers.LocationScorer, max_source_length=9),
}


def _model(attention: str, scorer: str, cell: str = "gru", tie: bool = False) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(
        src_vocab_size=17, tgt_vocab_size=19, cell=cell, attention=attention,
        scorer=SCORERS[scorer], input_feeding=False, embedding_size=6, hidden_size=10,
        encoder_hidden_size=4, encoder_layers=2, decoder_layers=2, bidirectional=True,
        dropout=0.0, bridge="zero", tie_embeddings=tie, reverse_source=False,
    ).eval()  # fmt: skip


@pytest.mark.parametrize(
    ("attention", "scorer", "cell", "tie"),
    [
        ("none", "general", "gru", False),
        ("bahdanau", "additive", "gru", False),
        ("bahdanau", "mlp", "rnn", False),
        ("luong", "general", "gru", True),
        *[("luong", name, "gru", False) for name in SCORERS],
    ],
)
def test_count_matches_torch_flop_counter(attention: str, scorer: str, cell: str, tie: bool):
    model = _model(attention, scorer, cell, tie)
    batch, source, target = 3, 5, 4  # no padding: every position is real work
    src = torch.randint(4, 17, (batch, source))
    tgt_in = torch.randint(4, 19, (batch, target))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(src, torch.full((batch,), source), tgt_in)
    counted = count_flops(model, batch * source, batch * target, pairs=batch * source * target)
    assert counted.forward == counter.get_total_flops()
    assert counted.training == 3 * counted.forward
