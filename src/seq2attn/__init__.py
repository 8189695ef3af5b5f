"""seq2attn: an experiment platform for attention-based RNN sequence-to-sequence translation."""

__version__ = "0.1.0"
