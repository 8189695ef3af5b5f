"""Typed schemas of the composed configuration, checked once at start-up before any work.

``OmegaConf.structured`` rejects unknown keys, wrong types and values outside an ``Enum`` with the
full key and the allowed set; each schema's ``__post_init__`` adds range and cross-field checks.
Every failure surfaces as a :class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seq2attn.lr_schedules import InverseSqrtFactor, WarmupCosineFactor


class ConfigError(ValueError):
    """An invalid configuration value."""


class Cell(str, Enum):
    rnn = "rnn"
    gru = "gru"
    lstm = "lstm"


class Wiring(str, Enum):
    none = "none"
    bahdanau = "bahdanau"
    luong = "luong"


class BridgeKind(str, Enum):
    zero = "zero"
    last = "last"
    mean = "mean"
    linear = "linear"


class SearchStrategy(str, Enum):
    greedy = "greedy"
    beam = "beam"


class SentencePieceModel(str, Enum):
    unigram = "unigram"
    bpe = "bpe"


class Normalization(str, Enum):
    NFKC = "NFKC"
    NFC = "NFC"
    none = "none"


class DecodeErrors(Enum):  # not a str Enum: its member `replace` would shadow str.replace
    strict = "strict"
    replace = "replace"


def _positive(key: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value}: must be a positive number")


def _unit_interval(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}={value}: must lie in [0, 1)")


@dataclass
class ModelSchema:
    _target_: str = "seq2attn.models.seq2seq.Seq2Seq"
    cell: Cell = Cell.gru
    attention: Wiring = Wiring.luong
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
            _positive(f"model.{name}", getattr(self, name))
        _positive("model.encoder_hidden_size", self.encoder_hidden_size, allow_none=True)
        for name in ("dropout", "source_word_dropout", "target_word_dropout"):
            _unit_interval(f"model.{name}", getattr(self, name))
        _positive("model.param_init", self.param_init, allow_none=True)
        if self.input_feeding and self.attention != Wiring.luong:
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


@dataclass
class DataSchema:
    """The ``data`` group: every key any data option sets.

    Corpus keys (``root`` ... ``dataset``) are read by the corpus config (``data.corpus``) through
    interpolation, so each is null in the options that do not use it; the corpus constructor
    checks the values it needs. The other keys are the data module's settings.
    """

    _target_: str = "seq2attn.data.datamodule.TranslationDataModule"
    corpus: Any = None
    # multi30k (src_lang/tgt_lang and test_split also hf)
    root: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    test_split: str | None = None
    download: bool = True
    # text_pairs
    train_src: str | None = None
    train_tgt: str | None = None
    val_src: str | None = None
    val_tgt: str | None = None
    test_src: str | None = None
    test_tgt: str | None = None
    # tsv
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    # hf
    dataset: str | None = None
    dataset_config: str | None = None
    revision: str | None = None
    val_split: str | None = None
    # reading and preprocessing
    on_decode_error: DecodeErrors = DecodeErrors.strict
    normalization: Normalization = Normalization.NFKC
    drop_empty: bool = True
    max_chars: int = 1000
    min_length: int = 1
    max_length: int = 100
    max_length_ratio: float | None = None
    # tokenizer: a SentencePiece model file to use as is (joint), or null to train one
    spm_model: str | None = None
    vocab_size: int = 1000
    joint_vocab: bool = True
    sp_model_type: SentencePieceModel = SentencePieceModel.unigram
    character_coverage: float = 1.0
    # batching
    max_tokens: int | None = 3000
    max_sentences: int | None = None
    cache_dir: str = ".cache/seq2attn"
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_chars", "max_length"):
            _positive(f"data.{name}", getattr(self, name))
        _positive("data.max_tokens", self.max_tokens, allow_none=True)
        _positive("data.max_sentences", self.max_sentences, allow_none=True)
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


@dataclass
class DecodingSchema:
    strategy: SearchStrategy = SearchStrategy.greedy
    beam_size: int = 1
    length_penalty: float = 0.0
    n_best: int = 1
    max_length_a: float = 1.5
    max_length_b: int = 10

    def __post_init__(self) -> None:
        _positive("decoding.beam_size", self.beam_size)
        if self.strategy == SearchStrategy.greedy and self.beam_size != 1:
            raise ConfigError(
                f"decoding.beam_size={self.beam_size} with decoding=greedy: use decoding=beam"
            )
        if not 1 <= self.n_best <= self.beam_size:
            raise ConfigError(
                f"decoding.n_best={self.n_best}: must lie in "
                f"[1, decoding.beam_size={self.beam_size}]"
            )
        if self.length_penalty < 0:
            raise ConfigError(f"decoding.length_penalty={self.length_penalty}: must be >= 0")
        if self.max_length_a < 0 or self.max_length_b < 0:
            raise ConfigError("decoding.max_length_a and decoding.max_length_b must be >= 0")


@dataclass
class DotScorerSchema:
    _target_: str = ""
    _partial_: bool = True
    project_keys: bool = False


@dataclass
class GeneralScorerSchema:
    _target_: str = ""
    _partial_: bool = True
    scale: bool = False


@dataclass
class HiddenScorerSchema:
    _target_: str = ""
    _partial_: bool = True
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        _positive("scorer.hidden_size", self.hidden_size, allow_none=True)


@dataclass
class MLPScorerSchema:
    _target_: str = ""
    _partial_: bool = True
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])

    def __post_init__(self) -> None:
        if not self.hidden_sizes:
            raise ConfigError("scorer.hidden_sizes=[]: give at least one layer size")
        for size in self.hidden_sizes:
            _positive("scorer.hidden_sizes[...]", size)


@dataclass
class LocationScorerSchema:
    _target_: str = ""
    _partial_: bool = True
    max_source_length: int = 256

    def __post_init__(self) -> None:
        _positive("scorer.max_source_length", self.max_source_length)


SCORER_SCHEMAS: dict[str, type] = {
    "DotScorer": DotScorerSchema,
    "ScaledDotScorer": DotScorerSchema,
    "GeneralScorer": GeneralScorerSchema,
    "ConcatScorer": HiddenScorerSchema,
    "AdditiveScorer": HiddenScorerSchema,
    "MLPScorer": MLPScorerSchema,
    "LocationScorer": LocationScorerSchema,
}
EQUAL_SIZE_SCORERS = {"DotScorer", "ScaledDotScorer"}


def check(schema: type, node: Any, key: str) -> Any:
    """Merge ``node`` into ``schema`` and build the dataclass, raising a :class:`ConfigError`."""
    try:
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as error:
        full_key = f"{key}.{error.full_key}" if getattr(error, "full_key", None) else key
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{full_key}: {reason}") from error
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key}: {error}") from error


def _check_scorer(scorer: Any, model: ModelSchema) -> None:
    target = str(scorer.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    if name not in SCORER_SCHEMAS:
        raise ConfigError(
            f"scorer._target_={target}: unknown scorer; allowed: "
            + ", ".join(f"seq2attn.models.scorers.{n}" for n in SCORER_SCHEMAS)
        )
    parsed = check(SCORER_SCHEMAS[name], scorer, "scorer")
    if model.attention == Wiring.none or name not in EQUAL_SIZE_SCORERS:
        return
    if model.hidden_size != model.key_size and not parsed.project_keys:
        raise ConfigError(
            f"scorer={name} needs equal query and key sizes, but the decoder state has "
            f"model.hidden_size={model.hidden_size} and the encoder states have {model.key_size} "
            f"(model.encoder_hidden_size x directions); set scorer.project_keys=true or make the "
            "sizes equal"
        )


GPU_STRATEGIES = {"FSDPStrategy": None, "DeepSpeedStrategy": "deepspeed"}


def _check_hardware(trainer: Any) -> None:
    """GPU-only precision and strategies stop here on a CPU-only machine (Lightning would
    silently downgrade 16-mixed to bf16, or fail deep inside set-up)."""
    precision = str(trainer.get("precision", "32-true"))
    accelerator = str(trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in {"16-mixed", "16", "16-true"} and on_cpu:
        raise ConfigError(
            f"precision={precision} needs a CUDA GPU (trainer.accelerator={accelerator}, "
            "no GPU found); on CPU use precision=bf16-mixed or precision=32-true"
        )
    strategy = trainer.get("strategy")
    name = (
        str(strategy.get("_target_", "")).rsplit(".", 1)[-1] if OmegaConf.is_dict(strategy) else ""
    )
    if name not in GPU_STRATEGIES:
        return
    if on_cpu:
        raise ConfigError(
            f"strategy={name} needs a CUDA GPU (trainer.accelerator={accelerator}, no GPU found); "
            "on CPU use strategy=ddp or strategy=ddp_spawn"
        )
    package = GPU_STRATEGIES[name]
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"strategy={name} needs the '{package}' package: pip install {package}")


def _check_teacher_forcing(node: Any, model: ModelSchema) -> None:
    """Schedule parameters, and two-pass sampling only where the decoder has a parallel path."""
    try:
        schedule = instantiate(node)
    except InstantiationException as error:
        raise ConfigError(f"teacher_forcing: {error.__cause__ or error}") from error
    two_pass = str(getattr(schedule, "mode", "step")).endswith("two_pass")
    parallel = model.attention == Wiring.none or (
        model.attention == Wiring.luong and not model.input_feeding
    )
    if two_pass and not parallel:
        raise ConfigError(
            f"teacher_forcing.mode=two_pass needs a parallel decoder (attention=luong without "
            f"input feeding, or attention=none); got attention={model.attention.value}"
            + (" with attention.input_feeding=true" if model.input_feeding else "")
            + "; use teacher_forcing.mode=step"
        )


def _check_scheduler(node: Any) -> None:
    """The interval, and the step counts of the per-step schedules (total after warm-up)."""
    interval = node.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval={interval}: must be epoch or step")
    factors = {
        "seq2attn.lr_schedules.warmup_cosine": WarmupCosineFactor,
        "seq2attn.lr_schedules.inverse_sqrt": InverseSqrtFactor,
    }
    factor = factors.get(str(node.get("_target_")))
    if factor is None:
        return
    if interval != "step":
        raise ConfigError(f"scheduler={node._target_} counts optimizer steps: use interval=step")
    fields = {k: node[k] for k in node if k not in ("_target_", "_partial_", "interval")}
    try:
        factor(**fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


def validate(cfg: DictConfig) -> None:
    """Check the composed training config; raise :class:`ConfigError` on the first problem."""
    model = check(ModelSchema, cfg.model, "model")
    _check_scorer(cfg.model.scorer, model)
    check(DataSchema, cfg.data, "data")
    check(DecodingSchema, cfg.decoding, "decoding")
    _check_hardware(cfg.trainer)
    _check_teacher_forcing(cfg.teacher_forcing, model)
    if cfg.get("scheduler"):
        _check_scheduler(cfg.scheduler)
    if cfg.get("nonfinite_loss", "stop") not in {"stop", "skip"}:
        raise ConfigError(f"nonfinite_loss={cfg.nonfinite_loss}: must be stop or skip")
    if cfg.get("label_smoothing") is not None:
        _unit_interval("label_smoothing", float(cfg.label_smoothing))
