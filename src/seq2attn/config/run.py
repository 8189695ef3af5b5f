"""``validate(cfg)`` and its kin: check a composed config once, before any work, and return the
typed objects the run uses."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from seq2attn.config.model import AttentionWiring, ModelSchema, check_scorer
from seq2attn.config.trainer import (
    GPU_STRATEGIES,
    check_hardware,
    check_optimizer,
    check_trainer,
    strategy_name,
)
from seq2attn.cpu_tuning import CpuSettings
from seq2attn.data.pipeline import DataPipeline, Normalization, validate_data
from seq2attn.data.readers import OnDecodeError
from seq2attn.lr_schedules import InverseSqrtFactor, WarmupCosineFactor
from seq2attn.models.scorers import Scorer
from seq2attn.schema import ConfigError, check, positive, unit_interval
from seq2attn.teacher_forcing import AlwaysSchedule, Schedule


class SearchStrategy(str, Enum):
    greedy = "greedy"
    beam = "beam"


class LengthPenaltyType(str, Enum):
    gnmt = "gnmt"
    avg = "avg"


class OutputPrecision(str, Enum):
    """How a decoding step multiplies its output layer (:mod:`seq2attn.shortlist`)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


@dataclass
class DecodingSchema:
    """The search (:mod:`seq2attn.search`); every option after ``max_length_b`` is off by
    default."""

    strategy: SearchStrategy = SearchStrategy.greedy
    beam_size: int = 1
    length_penalty: float = 0.0
    n_best: int = 1
    max_length_a: float = 1.5
    max_length_b: int = 10
    length_penalty_type: LengthPenaltyType = LengthPenaltyType.gnmt
    coverage_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    min_length_a: float = 0.0
    early_stop: bool = False
    output_precision: OutputPrecision = OutputPrecision.fp32

    def __post_init__(self) -> None:
        positive("decoding.beam_size", self.beam_size)
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
        for key in ("coverage_penalty", "no_repeat_ngram_size", "min_length_a"):
            if getattr(self, key) < 0:
                raise ConfigError(f"decoding.{key}={getattr(self, key)}: must be >= 0 (0: off)")
        if self.strategy == SearchStrategy.greedy:
            if self.coverage_penalty:
                raise ConfigError(
                    f"decoding.coverage_penalty={self.coverage_penalty} with decoding=greedy: "
                    "it ranks beam hypotheses; use decoding=beam or coverage_penalty=0"
                )
            if self.early_stop:
                raise ConfigError(
                    "decoding.early_stop=true with decoding=greedy: it ends a beam search; "
                    "use decoding=beam or early_stop=false"
                )
            if self.length_penalty_type == LengthPenaltyType.avg:
                raise ConfigError(
                    "decoding.length_penalty_type=avg with decoding=greedy: it ranks beam "
                    "hypotheses; use decoding=beam or length_penalty_type=gnmt"
                )

    def check_attention(self, attends: bool) -> None:
        """Refuse a coverage penalty for a model whose steps give no attention weights."""
        if self.coverage_penalty and not attends:
            raise ConfigError(
                f"decoding.coverage_penalty={self.coverage_penalty} needs attention weights, and "
                "this model has none (attention=none): set decoding.coverage_penalty=0"
            )


class NonfiniteLoss(str, Enum):
    stop = "stop"
    skip = "skip"


class ResumeTo(str, Enum):
    same_folder = "same_folder"
    new_folder = "new_folder"


class SchedulerInterval(str, Enum):
    epoch = "epoch"
    step = "step"


class EvalSplit(str, Enum):
    val = "val"
    test = "test"


@dataclass
class DistillationSchema:
    """Word-level knowledge distillation (:mod:`seq2attn.loss`): ``teacher``, a checkpoint file
    or run folder (its best checkpoint), whose next-piece distributions get ``weight`` in the
    training targets; the student trains on the teacher's tokenizers (its own vocabulary
    settings are not used). Off without a teacher."""

    teacher: str | None = None
    weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"distillation.weight={self.weight}: must lie in [0, 1]")
        if self.teacher is not None and self.weight == 0:
            raise ConfigError(
                f"distillation.weight=0 with distillation.teacher={self.teacher}: the teacher "
                "would have no say; give a weight in (0, 1], or distillation.teacher=null"
            )


@dataclass
class EMASchema:
    """An exponential moving average of the weights (:mod:`seq2attn.ema`): after each optimizer
    step after ``start_step``, ``θ̄ ← decay·θ̄ + (1 − decay)·θ`` (up to it, ``θ̄ ← θ``);
    validation, the kept checkpoints and the closing test use ``θ̄``. Off while ``decay`` is
    null."""

    decay: float | None = None
    start_step: int = 0

    def __post_init__(self) -> None:
        if self.decay is not None and not 0 < self.decay < 1:
            raise ConfigError(f"ema.decay={self.decay}: must lie in (0, 1), or null (off)")
        if self.start_step < 0:
            raise ConfigError(f"ema.start_step={self.start_step}: must be 0 or more")


@dataclass
class TrainingSchema:
    """The training config's own keys (``conf/train.yaml``) that the run reads."""

    decoding: DecodingSchema = field(default_factory=DecodingSchema)
    cpu: CpuSettings = field(default_factory=CpuSettings)
    label_smoothing: float = 0.0
    rdrop_alpha: float = 0.0
    nonfinite_loss: NonfiniteLoss = NonfiniteLoss.stop
    resume_to: ResumeTo = ResumeTo.same_folder
    free_running_loss: bool = False
    compile_loop: bool = False
    distillation: DistillationSchema = field(default_factory=DistillationSchema)
    init_from: str | None = None
    ema: EMASchema = field(default_factory=EMASchema)

    def __post_init__(self) -> None:
        unit_interval("label_smoothing", self.label_smoothing)
        if not math.isfinite(self.rdrop_alpha) or self.rdrop_alpha < 0:
            raise ConfigError(
                f"rdrop_alpha={self.rdrop_alpha}: must be a finite number, 0 (off) or more"
            )


@dataclass
class InferenceSchema:
    """The keys eval and translate share (``conf/eval.yaml``, ``conf/translate.yaml``)."""

    decoding: DecodingSchema = field(default_factory=DecodingSchema)
    cpu: CpuSettings = field(default_factory=CpuSettings)
    max_tokens: int | None = 4000
    max_sentences: int | None = None
    max_source_length: int = 250
    parallel_batches: int = 2

    def __post_init__(self) -> None:
        positive("max_tokens", self.max_tokens, allow_none=True)
        positive("max_sentences", self.max_sentences, allow_none=True)
        positive("max_source_length", self.max_source_length)
        positive("parallel_batches", self.parallel_batches)
        if self.max_tokens is None and self.max_sentences is None:
            raise ConfigError("max_tokens and max_sentences cannot both be null: set one")


@dataclass
class EvalSchema(InferenceSchema):
    split: EvalSplit = EvalSplit.test
    attention_page: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_page < 0:
            raise ConfigError(
                f"attention_page: {self.attention_page} sentences; allowed: 0 (no page) or more"
            )


@dataclass
class EvalDataSchema:
    """The keys eval reads of its data config (the checkpoint's, with the user's ``data.*``
    applied) besides the corpus node; ``on_decode_error`` is the file corpora's."""

    normalization: Normalization = MISSING
    drop_empty: bool = MISSING
    max_chars: int = MISSING
    on_decode_error: OnDecodeError | None = None

    def __post_init__(self) -> None:
        positive("data.max_chars", self.max_chars)


@dataclass
class TranslateSchema(InferenceSchema):
    """``max_chars=None`` takes the checkpoint's ``data.max_chars`` (see
    :class:`seq2attn.inference.lines.LinePolicy`)."""

    chunk_size: int = 2000
    on_decode_error: OnDecodeError = OnDecodeError.strict
    max_chars: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("chunk_size", self.chunk_size)
        positive("max_chars", self.max_chars, allow_none=True)


@dataclass(frozen=True)
class RunConfig:
    """A training config, checked: what :func:`validate` returns.

    ``scorer`` is the scorer factory the model takes (``model.scorer`` is its node);
    ``teacher_forcing`` is the built schedule; ``scheduler_interval`` is when the learning-rate
    scheduler steps (``epoch`` or ``step``) and ``anneal_to_time_limit`` whether it reads the
    time spent (``scheduler.*``); ``nonfinite_loss`` is ``stop`` or ``skip``;
    ``free_running_loss`` whether validation also scores the decoder fed its own argmax;
    ``compile_loop`` whether training compiles the decoder's per-position function;
    ``distillation`` the teacher whose distributions the targets mix in, if any; ``init_from``
    the checkpoint whose weights the model starts from, if any (:mod:`seq2attn.warm_start`);
    ``ema`` the moving average of the weights that validation and checkpoints use, if any;
    ``rdrop_alpha`` the weight of R-Drop's consistency term (0: off;
    :func:`seq2attn.loss.rdrop_nll`).
    """

    model: ModelSchema
    scorer: Callable[..., Scorer]
    data: DataPipeline
    decoding: DecodingSchema
    cpu: CpuSettings
    teacher_forcing: Schedule
    scheduler_interval: str
    anneal_to_time_limit: bool
    label_smoothing: float
    nonfinite_loss: str
    rdrop_alpha: float = 0.0
    free_running_loss: bool = False
    compile_loop: bool = False
    distillation: DistillationSchema = field(default_factory=DistillationSchema)
    init_from: str | None = None
    ema: EMASchema = field(default_factory=EMASchema)


def validate(cfg: DictConfig) -> RunConfig:
    """Check the composed training config; raise :class:`ConfigError` on the first problem."""
    model = check(ModelSchema, cfg.model, "model")
    scorer = check_scorer(cfg.model.scorer, model)
    data = validate_data(cfg.data)
    own = check(TrainingSchema, _keys(cfg, TrainingSchema), "")
    # a teacher or a warm start brings its tokenizers: load_teacher and load_warm_start check them
    given = {"distillation.teacher": own.distillation.teacher, "init_from": own.init_from}
    given = {option: name for option, name in given.items() if name is not None}
    if model.share_embeddings and not (data.joint_vocab or data.spm_model or given):
        raise ConfigError(
            "model.share_embeddings=true needs one vocabulary for both sides: set "
            "data.joint_vocab=true or give data.spm_model"
        )
    own.decoding.check_attention(model.attention != AttentionWiring.none)
    if given and data.spm_model is not None:
        option = next(iter(given))
        raise ConfigError(
            f"data.spm_model={data.spm_model} with {option}: the run trains on the tokenizers "
            f"of the checkpoint {option} names; set data.spm_model=null"
        )
    check_hardware(cfg.trainer)
    check_trainer(cfg.trainer)
    _check_ema(own.ema, cfg)
    check_optimizer(cfg.optimizer)
    teacher_forcing = _teacher_forcing(cfg.teacher_forcing, model)
    _check_rdrop(own.rdrop_alpha, model, teacher_forcing)
    interval, anneal = _scheduler(cfg.get("scheduler"))
    if anneal and cfg.trainer.get("max_time") is None:
        raise ConfigError(
            "scheduler.anneal_to_time_limit=true needs trainer.max_time (the limit whose share "
            "spent the decay follows); set it, or scheduler.anneal_to_time_limit=false"
        )
    return RunConfig(
        model=model,
        scorer=scorer,
        data=data,
        decoding=own.decoding,
        cpu=own.cpu,
        teacher_forcing=teacher_forcing,
        scheduler_interval=interval,
        anneal_to_time_limit=anneal,
        label_smoothing=own.label_smoothing,
        nonfinite_loss=own.nonfinite_loss.value,
        rdrop_alpha=own.rdrop_alpha,
        free_running_loss=own.free_running_loss,
        compile_loop=own.compile_loop,
        distillation=own.distillation,
        init_from=own.init_from,
        ema=own.ema,
    )


def _check_rdrop(alpha: float, model: ModelSchema, schedule: Schedule) -> None:
    """R-Drop compares two passes that differ only in their dropout masks: without dropout they
    are the same pass, and below full teacher forcing each pass would be fed its own tokens."""
    if alpha == 0:
        return
    if not any((model.dropout, model.source_word_dropout, model.target_word_dropout)):
        raise ConfigError(
            f"rdrop_alpha={alpha} with model.dropout=0 and no word dropout: the two passes R-Drop "
            "compares would be identical; set model.dropout (or a word dropout) above 0, or "
            "rdrop_alpha=0"
        )
    if not isinstance(schedule, AlwaysSchedule):
        raise ConfigError(
            f"rdrop_alpha={alpha} with teacher forcing below 1 ({type(schedule).__name__}): the "
            "two passes would be fed different tokens; use teacher_forcing=always, or rdrop_alpha=0"
        )


def _check_ema(ema: EMASchema, cfg: DictConfig) -> None:
    """What the moving average cannot work with: FSDP's sharded weights, DeepSpeed's own
    checkpoints, and weights-only checkpoints (Lightning skips the callbacks' checkpoint hook for
    them, so the kept files would hold the training weights)."""
    if ema.decay is None:
        return
    strategy = strategy_name(cfg.trainer)
    if strategy in GPU_STRATEGIES:
        raise ConfigError(
            f"ema.decay={ema.decay} with strategy={strategy}: the moving average needs whole "
            "weights saved through Lightning's checkpoint hooks, which FSDP (shards) and "
            "DeepSpeed (its own checkpoints) do not give; use strategy=ddp, or ema.decay=null"
        )
    kept = OmegaConf.select(cfg, "callbacks.model_checkpoint.save_weights_only", default=False)
    if kept:
        raise ConfigError(
            f"ema.decay={ema.decay} with callbacks.model_checkpoint.save_weights_only=true: "
            "weights-only checkpoints would hold the training weights, not their average; "
            "set save_weights_only=false, or ema.decay=null"
        )


def validate_decoding(node: Any) -> DecodingSchema:
    """The ``decoding`` node, checked."""
    return check(DecodingSchema, node, "decoding")


def validate_eval(cfg: DictConfig) -> EvalSchema:
    """The keys of ``conf/eval.yaml`` that evaluation reads, checked (``split.value``: val/test)."""
    return check(EvalSchema, _keys(cfg, EvalSchema), "")


def validate_eval_data(data: dict[str, Any]) -> EvalDataSchema:
    """The keys of :class:`EvalDataSchema` in the data config ``data``, checked."""
    keys = {f.name: data[f.name] for f in fields(EvalDataSchema) if f.name in data}
    return check(EvalDataSchema, keys, "data")


def validate_translate(cfg: DictConfig) -> TranslateSchema:
    """The keys of ``conf/translate.yaml`` that translation reads, checked."""
    return check(TranslateSchema, _keys(cfg, TranslateSchema), "")


def _keys(cfg: DictConfig, schema: type) -> dict[str, Any]:
    """The values of ``cfg`` for the schema's fields that it sets, resolved."""
    return {
        f.name: OmegaConf.to_container(cfg[f.name], resolve=True)
        if OmegaConf.is_config(cfg[f.name])
        else cfg[f.name]
        for f in fields(schema)
        if f.name in cfg
    }


def _teacher_forcing(node: Any, model: ModelSchema) -> Schedule:
    """The schedule, built; two-pass sampling only where the decoder has a parallel path."""
    try:
        schedule = instantiate(node)
    except InstantiationException as error:
        raise ConfigError(f"teacher_forcing: {error.__cause__ or error}") from error
    two_pass = str(getattr(schedule, "mode", "step")).endswith("two_pass")
    parallel = model.attention == AttentionWiring.none or (
        model.attention == AttentionWiring.luong and not model.input_feeding
    )
    if two_pass and not parallel:
        raise ConfigError(
            f"teacher_forcing.mode=two_pass needs a parallel decoder (attention=luong without "
            f"input feeding, or attention=none); got attention={model.attention.value}"
            + (" with attention.input_feeding=true" if model.input_feeding else "")
            + "; use teacher_forcing.mode=step"
        )
    return schedule


# keys of the scheduler node the training module reads; the others are the schedule's arguments
MODULE_KEYS = ("interval", "anneal_to_time_limit")


def _scheduler(node: Any) -> tuple[str, bool]:
    """``(interval, anneal_to_time_limit)`` of the scheduler node, checked, with the arguments of
    the per-step schedules; ``("epoch", False)`` without a scheduler."""
    if not node:
        return SchedulerInterval.epoch.value, False
    value = node.get("interval", "epoch")
    if value not in SchedulerInterval.__members__:
        raise ConfigError(f"scheduler.interval={value}: must be epoch or step")
    interval = SchedulerInterval(value)
    anneal = node.get("anneal_to_time_limit", False)
    factors = {
        "seq2attn.lr_schedules.warmup_cosine": WarmupCosineFactor,
        "seq2attn.lr_schedules.inverse_sqrt": InverseSqrtFactor,
    }
    factor = factors.get(str(node.get("_target_")))
    if not isinstance(anneal, bool) or (anneal and factor is not WarmupCosineFactor):
        raise ConfigError(
            f"scheduler.anneal_to_time_limit={anneal}: true or false, and true needs "
            "scheduler=warmup_cosine (the schedule that reads the time spent)"
        )
    if factor is None:
        return interval.value, anneal
    if interval != SchedulerInterval.step:
        raise ConfigError(f"scheduler={node._target_} counts optimizer steps: use interval=step")
    arguments = {k: node[k] for k in node if k not in ("_target_", "_partial_", *MODULE_KEYS)}
    try:
        factor(**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    return interval.value, anneal
