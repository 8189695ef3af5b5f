"""Warm start (``init_from``): a training run whose model starts from a trained checkpoint's
weights instead of random ones, as in fine-tuning or a distillation student that starts from its
teacher (JoeyNMT's ``load_model`` with every ``reset_*``, fairseq's ``--finetune-from-model``).

Only the weights carry over: the optimizer, the learning-rate schedule, the step count and the
best score start afresh (``ckpt_path`` is what resumes a run where it stopped). The run trains on
the checkpoint's tokenizers, so that every embedding row keeps its piece, and must build the
same network from its ``model.*`` options (dropout rates may differ: they hold no weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seq2attn.checkpoints.loading import check_reusable, load_checkpoints, resolve_checkpoint
from seq2attn.config import ConfigError
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.models.seq2seq import Seq2Seq

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """The weights a run starts from, the checkpoint they came from and its tokenizers."""

    path: Path
    weights: dict[str, torch.Tensor]
    model_config: dict[str, Any]
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer

    @property
    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """(source, target): the run's, so that every embedding row keeps its piece."""
        return self.src_tokenizer, self.tgt_tokenizer

    def apply(self, model: Seq2Seq, model_config: dict[str, Any]) -> None:
        """Copy the weights into ``model``; refused (naming the first parameter and the
        ``model.*`` options that differ) when the run builds another network."""
        mine = model.state_dict()
        missing = sorted(mine.keys() - self.weights.keys())
        extra = sorted(self.weights.keys() - mine.keys())
        reshaped = [k for k in mine if k in self.weights and mine[k].shape != self.weights[k].shape]
        if missing or extra or reshaped:
            if reshaped:
                first = reshaped[0]
                what = (
                    f"{first} is {tuple(self.weights[first].shape)} there and "
                    f"{tuple(mine[first].shape)} here"
                )
            else:
                what = f"{(missing or extra)[0]} is only {'here' if missing else 'there'}"
            options = _differing_options(self.model_config, model_config)
            raise ConfigError(
                f"init_from={self.path}: its network differs from this run's ({what}; model "
                f"options that differ: {options or 'none'}); give the model.* options it was "
                "trained with (its run folder's config.yaml)"
            )
        model.load_state_dict(self.weights)
        log.info("starting from the weights of %s (optimizer and schedule afresh)", self.path)


def _differing_options(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    """``model.key=theirs->mine`` for every top-level model option whose values differ."""
    keys = sorted(theirs.keys() | mine.keys())
    return ", ".join(
        f"model.{key}={theirs.get(key)}->{mine.get(key)}"
        for key in keys
        if theirs.get(key) != mine.get(key)
    )


def load_warm_start(
    name: str | None,
    share_embeddings: bool,
    languages: tuple[str | None, str | None] = (None, None),
) -> WarmStart | None:
    """The weights of ``init_from`` (a checkpoint file, or a run folder's best checkpoint), or
    None when it names none. Refused like a distillation teacher: a checkpoint of another
    (source, target) direction, and one whose two tokenizers differ under
    ``model.share_embeddings``."""
    if name is None:
        return None
    path = resolve_checkpoint(name)
    loaded = load_checkpoints([path])
    assert isinstance(loaded.model, Seq2Seq)  # one file, so no ensemble
    check_reusable(f"init_from={name}", loaded, share_embeddings, languages)
    weights = {key: value.detach().clone() for key, value in loaded.model.state_dict().items()}
    model_config = dict(loaded.config.get("model") or {})
    return WarmStart(path, weights, model_config, loaded.src_tokenizer, loaded.tgt_tokenizer)


def given_tokenizers(*sources: Any) -> tuple[Tokenizer, Tokenizer] | None:
    """The tokenizers the run must train on: those of its distillation teacher and of its warm
    start (either may be None); refused when the two bring different ones."""
    given = [(s.path, s.tokenizers) for s in sources if s is not None]
    if not given:
        return None
    (first_path, first), *others = given
    for path, pair in others:
        if any(a.proto != b.proto for a, b in zip(first, pair, strict=True)):
            raise ConfigError(
                f"{first_path} and {path} were trained on different tokenizers, and this run "
                "trains on both's: give checkpoints that share them"
            )
    return first
