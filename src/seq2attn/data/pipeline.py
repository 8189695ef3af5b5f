"""The data keys every corpus shares (``conf/data/base.yaml``), and the check of a ``data`` node.

A corpus class whose option adds keys at the top of ``data`` (``data.src_lang``,
``data.train_file``, ...) names the :class:`DataPipeline` subclass that declares them in its
class attribute ``data_schema`` (``seq2attn.data.readers``). The corpus constructor, the target
of ``data.corpus``, is the schema of that node: ``data=toy`` adds no keys, so its schema is
:class:`DataPipeline` and ``ToyCorpus``'s signature.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from seq2attn.schema import ConfigError, check, check_options, import_class, positive


class Normalization(str, Enum):
    NFKC = "NFKC"
    NFC = "NFC"
    none = "none"


class SentencePieceModel(str, Enum):
    unigram = "unigram"
    bpe = "bpe"


@dataclass
class DataPipeline:
    """Preprocessing, tokenizer, batching and cache keys; the values live in the YAML."""

    _target_: str = MISSING
    corpus: Any = MISSING
    normalization: Normalization = MISSING
    drop_empty: bool = MISSING
    max_chars: int = MISSING
    min_length: int = MISSING
    max_length: int = MISSING
    max_length_ratio: float | None = MISSING
    spm_model: str | None = MISSING
    vocab_size: int = MISSING
    joint_vocab: bool = MISSING
    sp_model_type: SentencePieceModel = MISSING
    character_coverage: float = MISSING
    max_tokens: int | None = MISSING
    max_sentences: int | None = MISSING
    cache_dir: str = MISSING
    seed: int = MISSING
    num_workers: int = MISSING
    subword_alpha: float | None = MISSING
    subword_nbest: int = MISSING

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_chars", "max_length"):
            positive(f"data.{name}", getattr(self, name))
        positive("data.max_tokens", self.max_tokens, allow_none=True)
        positive("data.max_sentences", self.max_sentences, allow_none=True)
        if self.max_tokens is None and self.max_sentences is None:
            raise ConfigError("data.max_tokens and data.max_sentences are both null: set one")
        if not 1 <= self.min_length <= self.max_length:
            raise ConfigError(
                f"data.min_length={self.min_length}: must lie in [1, data.max_length="
                f"{self.max_length}] (the encoder cannot read an empty source)"
            )
        if self.max_length_ratio is not None and self.max_length_ratio < 1:
            raise ConfigError(
                f"data.max_length_ratio={self.max_length_ratio}: must be >= 1, or null for no "
                "ratio filter"
            )
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(
                f"data.character_coverage={self.character_coverage}: must lie in (0, 1]"
            )
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers}: must be >= 0")
        self._check_subword_sampling()

    def _check_subword_sampling(self) -> None:
        alpha, nbest = self.subword_alpha, self.subword_nbest
        bpe = self.spm_model is None and self.sp_model_type == SentencePieceModel.bpe
        if nbest < 2 and nbest != -1:
            raise ConfigError(f"data.subword_nbest={nbest}: must be -1 (all segmentations) or >= 2")
        if alpha is None:
            if nbest != -1:
                raise ConfigError(
                    f"data.subword_nbest={nbest} needs data.subword_alpha (null: no sampling)"
                )
        elif bpe and not 0.0 < alpha < 1.0:
            raise ConfigError(
                f"data.subword_alpha={alpha}: a bpe model drops each merge with this "
                "probability; it must lie in (0, 1)"
            )
        elif bpe and nbest != -1:
            raise ConfigError(
                f"data.subword_nbest={nbest}: a bpe model samples by dropping merges; "
                "leave it at -1 (it applies to unigram models)"
            )
        elif alpha <= 0.0:
            raise ConfigError(
                f"data.subword_alpha={alpha}: must be > 0 (the power of each segmentation's "
                "probability), or null for the one best segmentation"
            )

    def module_arguments(self) -> dict[str, Any]:
        """The shared keys but ``_target_`` and ``corpus``: the data module's keyword arguments."""
        values = {f.name: getattr(self, f.name) for f in fields(DataPipeline)}
        return {
            name: value.value if isinstance(value, Enum) else value
            for name, value in values.items()
            if name not in ("_target_", "corpus")
        }


def validate_data(node: DictConfig) -> DataPipeline:
    """The ``data`` node checked against its corpus's schema and the corpus's constructor.

    Raises:
        ConfigError: a key not set (``???``), a corpus that cannot be imported, or a key, type or
            range the schemas reject.
    """
    if OmegaConf.is_missing(node, "corpus"):
        raise ConfigError("data.corpus: not set; pick a corpus: data=<option> (conf/data/*.yaml)")
    missing = sorted(OmegaConf.missing_keys(node))  # full keys: data.train_src, ...
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: not set; give each a value, e.g. {missing[0]}=path/to/file"
        )
    corpus_class = import_class(node.corpus.get("_target_"), "data.corpus._target_", object)
    check_options(corpus_class, node.corpus, "data.corpus")
    schema = getattr(corpus_class, "data_schema", DataPipeline)
    return check(schema, node, "data")
