"""Plain-PyTorch model components: scorers, attention, encoder, bridge, decoders, Seq2Seq."""

from seq2attn.models.attention import Attention, AttentionOutput, masked_softmax
from seq2attn.models.bridge import Bridge
from seq2attn.models.decoders import (
    BahdanauDecoder,
    DecoderOutput,
    DecoderState,
    LuongDecoder,
    Memory,
    NoAttentionDecoder,
    StepOutput,
)
from seq2attn.models.encoder import EncoderOutput, RNNEncoder
from seq2attn.models.scorers import (
    AdditiveScorer,
    ConcatScorer,
    DotScorer,
    GeneralScorer,
    LocationScorer,
    MLPScorer,
    ScaledDotScorer,
    Scorer,
)
from seq2attn.models.seq2seq import Seq2Seq, Seq2SeqOutput

__all__ = [
    "AdditiveScorer",
    "Attention",
    "AttentionOutput",
    "BahdanauDecoder",
    "Bridge",
    "ConcatScorer",
    "DecoderOutput",
    "DecoderState",
    "DotScorer",
    "EncoderOutput",
    "GeneralScorer",
    "LocationScorer",
    "LuongDecoder",
    "MLPScorer",
    "Memory",
    "NoAttentionDecoder",
    "RNNEncoder",
    "ScaledDotScorer",
    "Scorer",
    "Seq2Seq",
    "Seq2SeqOutput",
    "StepOutput",
    "masked_softmax",
]
