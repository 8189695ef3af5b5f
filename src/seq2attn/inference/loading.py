"""Checkpoints (files, run folders, ensembles) to a ready :class:`Translator`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2attn.checkpoints.loading import load_checkpoints, resolve_checkpoint
from seq2attn.checkpoints.trust import CORPUS_BASES, check_targets
from seq2attn.data.corpus import Corpus, CorpusError
from seq2attn.inference.translator import Translator
from seq2attn.schema import ConfigError

CheckpointNames = str | Path | Sequence[str | Path]


def load(checkpoints: CheckpointNames, log_dir: Path | None = None) -> Translator:
    """A :class:`Translator` for a checkpoint file, a run folder (its best checkpoint, else its
    ``last.ckpt``) or a list of them (decoded as one ensemble). With ``log_dir``, the name
    ``last`` stands for the newest run folder under ``<log_dir>/train``."""
    names = [checkpoints] if isinstance(checkpoints, str | Path) else list(checkpoints)
    loaded = load_checkpoints([resolve_checkpoint(name, log_dir) for name in names])
    return Translator(
        loaded.model, loaded.src_tokenizer, loaded.tgt_tokenizer, loaded.config, loaded.paths
    )


def data_config_for(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's data config with the non-null keys of ``given`` applied.

    A whole data group (it has ``_target_``) replaces the stored config; a single key also sets
    the corpus key of the same name (``data.test_split`` -> ``data.corpus.test_split``).
    """
    overrides = {str(key): value for key, value in given.items() if value is not None}
    if "_target_" in overrides:
        return overrides
    data = copy.deepcopy(stored)
    for key, value in overrides.items():
        data[key] = value
        if key in data.get("corpus", {}):
            data["corpus"][key] = value
    return data


def build_corpus(data: dict[str, Any], source: str) -> Corpus:
    """The corpus of a data config that comes (in part) from a checkpoint: its ``corpus`` node
    is built only after its targets passed :func:`check_targets` (``source`` names the file)."""
    node = data.get("corpus")
    check_targets(node, "data.corpus", CORPUS_BASES, source)
    try:
        return instantiate(OmegaConf.create(node))
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, CorpusError):
            raise cause from None
        raise ConfigError(f"data.corpus: {cause or error}") from None
