"""The ``model`` node's schema, the check of the picked scorer against its own class, and the
network built from both."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from seq2attn.models.scorers import Scorer
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.schema import ConfigError, check_options, import_class, positive, unit_interval


class Cell(str, Enum):
    rnn = "rnn"
    gru = "gru"
    lstm = "lstm"


class AttentionWiring(str, Enum):
    """The ``attention`` group: how the decoder uses attention."""

    none = "none"
    bahdanau = "bahdanau"
    luong = "luong"


class BridgeKind(str, Enum):
    zero = "zero"
    last = "last"
    mean = "mean"
    linear = "linear"


@dataclass
class ModelSchema:
    _target_: str = "seq2attn.models.seq2seq.Seq2Seq"
    cell: Cell = Cell.gru
    attention: AttentionWiring = AttentionWiring.luong
    input_feeding: bool = False
    scorer: Any = None
    embedding_size: int = 128
    hidden_size: int = 256
    encoder_hidden_size: int | None = None
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2
    bridge: BridgeKind = BridgeKind.linear
    tie_embeddings: bool = False
    share_embeddings: bool = False
    param_init: float | None = None
    reverse_source: bool = False
    source_word_dropout: float = 0.0
    target_word_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "encoder_layers", "decoder_layers"):
            positive(f"model.{name}", getattr(self, name))
        positive("model.encoder_hidden_size", self.encoder_hidden_size, allow_none=True)
        for name in ("dropout", "source_word_dropout", "target_word_dropout"):
            unit_interval(f"model.{name}", getattr(self, name))
        positive("model.param_init", self.param_init, allow_none=True)
        if self.input_feeding and self.attention != AttentionWiring.luong:
            raise ConfigError(
                f"attention.input_feeding=true applies to attention=luong only "
                f"(got attention={self.attention.value})"
            )
        if self.bidirectional and self.encoder_hidden_size is None and self.hidden_size % 2:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size}: must be even for a bidirectional encoder "
                "with model.encoder_hidden_size=null (each direction gets half)"
            )

    @property
    def key_size(self) -> int:
        """Size of the encoder states the scorer attends over."""
        per_direction = self.encoder_hidden_size or (
            self.hidden_size // 2 if self.bidirectional else self.hidden_size
        )
        return per_direction * (2 if self.bidirectional else 1)


def typed_option(group: str, fallback: str) -> str:
    """``group=<option>`` as the user picked it when Hydra composed this run, else ``fallback``
    (a config built without Hydra, or loaded from a checkpoint)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return f"{group}={choice}"
    return fallback


def check_scorer(node: Any, model: ModelSchema) -> Callable[..., Scorer]:
    """The scorer factory of the ``scorer`` node: the class at its ``_target_`` with the node's
    options, checked against the class's constructor and, when attention is used, its ``check``
    at the model's query and key sizes.

    Raises:
        ConfigError: an unknown class or option (the allowed ones listed), a wrong type, or a
            value the scorer rejects.
    """
    cls = import_class(node.get("_target_"), "scorer._target_", Scorer)
    options = check_options(cls, node, "scorer", skip=("query_size", "key_size"))
    if model.attention != AttentionWiring.none:  # the wiring without attention builds none
        checked = inspect.signature(cls.check).parameters  # the options check() looks at
        try:
            cls.check(
                model.hidden_size,
                model.key_size,
                **{name: value for name, value in options.items() if name in checked},
            )
        except ValueError as error:
            message = str(error)
            option = re.match(r"(\w+)=", message)
            if option and option.group(1) in options:
                raise ConfigError(f"scorer.{message}") from None
            # "scorer=dot needs ..." where the user picked scorer=dot, else "scorer: DotScorer ..."
            typed = typed_option("scorer", f"scorer: {cls.__name__}")
            named = message.replace(cls.__name__, typed, 1)
            raise ConfigError(
                f"{named if named != message else f'scorer: {message}'} (query_size is "
                "model.hidden_size, key_size the encoder states' size: "
                "model.encoder_hidden_size x directions)"
            ) from None
    return functools.partial(cls, **options)


def build_model(
    model: ModelSchema, scorer: Callable[..., Scorer], src_vocab_size: int, tgt_vocab_size: int
) -> Seq2Seq:
    """The network a checked ``model`` node describes, at the tokenizers' vocabulary sizes."""
    cls = import_class(model._target_, "model._target_", Seq2Seq)
    arguments = {
        f.name: value.value if isinstance(value, Enum) else value
        for f in fields(model)
        if f.name not in ("_target_", "scorer")
        for value in [getattr(model, f.name)]
    }
    return cls(
        **arguments, scorer=scorer, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size
    )
