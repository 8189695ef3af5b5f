"""seq2attn: an experiment platform for attention-based RNN sequence-to-sequence translation."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def data_name(option: str, src_lang: str | None = None, tgt_lang: str | None = None) -> str:
    """The data part of a run name: the data option with its language pair where the option
    has one (``multi30k-de-en``), else the option alone (``toy``)."""
    return f"{option}-{src_lang}-{tgt_lang}" if src_lang and tgt_lang else option


# the configs name runs with ${data_name:...}; every entry point imports seq2attn before composing
OmegaConf.register_new_resolver("data_name", data_name, replace=True)
