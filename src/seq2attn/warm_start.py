"""Warm start (``init_from``): a training run whose model starts from a trained checkpoint's
weights instead of random ones, as in fine-tuning or a distillation student that starts from its
teacher (JoeyNMT's ``load_model`` with every ``reset_*``, fairseq's ``--finetune-from-model``).

Only the weights carry over: the optimizer, the learning-rate schedule, the step count and the
best score start afresh (``ckpt_path`` is what resumes a run where it stopped). The run trains on
the checkpoint's tokenizers, so that every embedding row keeps its piece, and must build the same
network: the same weights, of the same shapes, shared between the same modules (tied or shared
embeddings). Rates that hold no weights, such as dropout, may differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seq2attn.checkpoints.loading import (
    check_reusable,
    load_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    stored_tokenizers,
)
from seq2attn.config import ConfigError, RunConfig
from seq2attn.config.model import build_model
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.distillation import Teacher
from seq2attn.models.seq2seq import Seq2Seq

log = logging.getLogger(__name__)

# model options that hold no weights: a warm start may change them
WEIGHTLESS_OPTIONS = frozenset(
    {"dropout", "source_word_dropout", "target_word_dropout", "param_init"}
)

# each weight's shape and the first weight whose storage it shares (None: its own)
Layout = dict[str, tuple[tuple[int, ...], str | None]]


@dataclass
class WarmStart:
    """The weights a run starts from and the checkpoint (file and tokenizers) they came from."""

    path: Path
    weights: dict[str, torch.Tensor]
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer

    @property
    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """(source, target): the run's, so that every embedding row keeps its piece."""
        return self.src_tokenizer, self.tgt_tokenizer

    def load_into_(self, model: Seq2Seq) -> None:
        """Copy the weights into ``model``, a network :func:`load_warm_start` checked."""
        model.load_state_dict(self.weights)
        log.info("starting from the weights of %s (optimizer and schedule afresh)", self.path)


def load_warm_start(
    run: RunConfig,
    model_config: dict[str, Any],
    languages: tuple[str | None, str | None] = (None, None),
    resuming: bool = False,
) -> WarmStart | None:
    """The weights of ``run.init_from`` (a checkpoint file, or a run folder's best checkpoint),
    or None when it names none or the run resumes (its own checkpoint then holds them). Refused:
    a checkpoint of another (source, target) direction, one whose two tokenizers differ under
    ``model.share_embeddings``, and one whose network differs from the one this run's
    ``model`` options (``model_config``, as given) build."""
    if run.init_from is None:
        return None
    if resuming:
        log.info(
            "init_from=%s is not read: a resumed run goes on from its own checkpoint", run.init_from
        )
        return None
    option = f"init_from={run.init_from}"
    path = resolve_checkpoint(run.init_from)
    loaded = load_checkpoints([path])
    assert isinstance(loaded.model, Seq2Seq)  # one file, so no ensemble
    tokenizers = loaded.src_tokenizer, loaded.tgt_tokenizer
    check_reusable(option, loaded.config, tokenizers, run.model.share_embeddings, languages)
    sizes = loaded.src_tokenizer.vocab_size, loaded.tgt_tokenizer.vocab_size
    planned = build_model(run.model, run.scorer, *sizes)
    difference = _first_difference(_layout(loaded.model), _layout(planned))
    if difference is not None:
        options = _differing_options(loaded.config.get("model") or {}, model_config)
        raise ConfigError(
            f"{option}: its network differs from this run's ({difference}; model options that "
            f"differ: {options or 'none'}); give the model.* options it was trained with (its "
            "run folder's config.yaml)"
        )
    return WarmStart(path, loaded.model.state_dict(), *tokenizers)


def _layout(model: torch.nn.Module) -> Layout:
    owners: dict[tuple[int, tuple[int, ...]], str] = {}
    layout: Layout = {}
    for key, tensor in model.state_dict().items():
        storage = (tensor.data_ptr(), tuple(tensor.shape))
        owner = owners.setdefault(storage, key)
        layout[key] = (tuple(tensor.shape), None if owner == key else owner)
    return layout


def _first_difference(checkpoint: Layout, run: Layout) -> str | None:
    """The first weight that is missing, shaped or shared otherwise in the run, said in words."""
    for key in sorted(checkpoint.keys() | run.keys()):
        if key not in run or key not in checkpoint:
            return f"{key} is only in {'the checkpoint' if key not in run else 'this run'}"
        (theirs, their_owner), (mine, my_owner) = checkpoint[key], run[key]
        if theirs != mine:
            return f"{key} is {theirs} in the checkpoint and {mine} in this run"
        if their_owner != my_owner:
            return (
                f"{key} shares its weights with {their_owner or 'no other'} in the checkpoint "
                f"and with {my_owner or 'no other'} in this run"
            )
    return None


def _flatten(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differing_options(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    """``model.key=theirs->mine`` for every model option that differs and may hold weights."""
    theirs, mine = _flatten(theirs, "model."), _flatten(mine, "model.")
    keys = sorted(k for k in theirs.keys() | mine.keys() if k[6:] not in WEIGHTLESS_OPTIONS)
    return ", ".join(
        f"{key}={theirs.get(key)}->{mine.get(key)}"
        for key in keys
        if theirs.get(key) != mine.get(key)
    )


def run_tokenizers(
    teacher: Teacher | None,
    start: WarmStart | None,
    resume_from: Path | None,
    share_embeddings: bool,
) -> tuple[Tokenizer, Tokenizer] | None:
    """The tokenizers a run trains on when it does not train its own: its distillation
    teacher's and its warm start's (refused when the two differ), or, when it resumes a
    warm-started run, those kept in that run's checkpoint. None: the data settings make them."""
    if teacher is not None and start is not None:
        pairs = zip(teacher.tokenizers, start.tokenizers, strict=True)
        if any(a.proto != b.proto for a, b in pairs):
            raise ConfigError(
                f"distillation.teacher={teacher.path} and init_from={start.path} were trained on "
                "different tokenizers, and this run would train on the tokenizers of each: give "
                "checkpoints that share them"
            )
    given = teacher or start
    if given is not None:
        return given.tokenizers
    if resume_from is None:
        return None
    contents = read_checkpoint(resume_from)
    if (contents["seq2attn"].get("config") or {}).get("init_from") is None:
        return None
    tokenizers = stored_tokenizers(resume_from, contents)
    check_reusable(f"ckpt_path={resume_from}", {}, tokenizers, share_embeddings)
    return tokenizers
