"""Training, the task behind ``src/train.py`` (eval and translate: seq2attn.inference.commands)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from seq2attn.callbacks import ProgressBar, ResumeCheckpoint, TokenThroughput
from seq2attn.checkpoints.loading import (
    NEWEST_RUN,
    check_resumable,
    mapped_checkpoint,
    resume_checkpoint,
)
from seq2attn.checkpoints.saving import AtomicCheckpointIO, SelfDescribingCheckpoint
from seq2attn.config import validate
from seq2attn.config.trainer import check_validation_interval
from seq2attn.cpu_tuning import configure_cpu
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.distillation import load_teacher
from seq2attn.ema import check_resumable_average, weight_ema
from seq2attn.faults import Preempted
from seq2attn.inference import Translator
from seq2attn.inference.outputs import (
    write_json,
    write_test_artifacts,
)
from seq2attn.loggers import build_loggers, finish_loggers
from seq2attn.module import build_module
from seq2attn.precision import resolve_precision
from seq2attn.quiet import silence_dependency_noise
from seq2attn.ranks import is_rank_zero, leave_process_group
from seq2attn.run_record import resolved_config, write_run_record
from seq2attn.run_story import ValidationLog, shown_path, stop_reason, summary
from seq2attn.shortlist import resolve_output_precision
from seq2attn.warm_start import load_warm_start, run_tokenizers

log = logging.getLogger(__name__)
silence_dependency_noise()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate the config, train, test the best checkpoint and write the run's artifacts.

    ``ckpt_path`` resumes: a checkpoint file, a run folder (its ``last.ckpt``) or ``last`` (the
    newest run folder under ``paths.log_dir``). A run stopped by SIGTERM/SIGINT writes
    ``last.ckpt``, skips the test and returns ``{"preempted": signal number}``.
    """
    started = time.perf_counter()
    run = validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    resume_from = _resume_point(cfg, output_dir)  # a checkpoint not found: refused before any work
    if resume_from is not None:
        check_resumable_average(resume_from, run.ema)
    configure_cpu(run.cpu)
    precision = resolve_precision(cfg)
    run = replace(run, decoding=resolve_output_precision(run.decoding, cfg.paths.cache_dir))
    L.seed_everything(cfg.seed, workers=True)
    config = resolved_config(cfg)
    # a fast dev run checks that everything runs: it writes nothing and tests one batch
    dev_run = bool(cfg.trainer.get("fast_dev_run"))
    if resume_from is None and is_rank_zero() and not dev_run:
        write_run_record(config, output_dir, None, precision)

    languages = (cfg.data.get("src_lang"), cfg.data.get("tgt_lang"))
    teacher = load_teacher(run.distillation, run.model.share_embeddings, languages)
    start = load_warm_start(run, config["model"], languages, resuming=resume_from is not None)
    tokenizers = run_tokenizers(teacher, start, resume_from, run.model.share_embeddings)
    datamodule: TranslationDataModule = build_datamodule(run.data, tokenizers)
    datamodule.setup("fit")
    if isinstance(cfg.trainer.get("val_check_interval"), int):
        check_validation_interval(cfg.trainer, len(datamodule.train_dataloader()))
    if resume_from is not None:
        check_resumable(resume_from, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
        if is_rank_zero():  # only once the resume is accepted: a refused one leaves no trace
            write_run_record(config, output_dir, resume_from, precision)
            log.info("resuming from %s", shown_path(resume_from))
    module = build_module(cfg, run, datamodule, teacher)
    if start is not None:
        start.load_into_(module.model)
        del start  # its copy of the weights is not needed while training
    if is_rank_zero():
        count = sum(p.numel() for p in module.model.parameters())
        log.info(
            "model: %s, %s parameters (%.1f MB)", cfg.run_name, f"{count:,}", count * 4 / 2**20
        )
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    if dev_run:  # Lightning's ModelCheckpoint still writes last.ckpt at the end of a dev run
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint | ResumeCheckpoint)]
    story = ValidationLog()
    callbacks += [TokenThroughput(), SelfDescribingCheckpoint(config), story]
    if (average := weight_ema(run.ema)) is not None:
        callbacks.insert(0, average)  # before ResumeCheckpoint: a step's save holds its θ̄
        if is_rank_zero():
            log.info(
                "validation and checkpoints use the moving average of the weights (decay %g)",
                average.decay,
            )
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    resume = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    loggers = [] if dev_run else build_loggers(cfg.logger, config)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    try:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
            # the agreed signal, also from the processes of ddp_spawn (through the metrics)
            stopped = resume.stopped_by if resume is not None else 0
            stopped = stopped or int(trainer.callback_metrics.get("trainer/stopped_by", 0))
            if stopped:
                return {"preempted": float(stopped)}
            reason = stop_reason(trainer)
            release_training_state(trainer, module)
            module.teacher = None  # the closing test scores the references alone
            metrics = _test_best(trainer, module, datamodule, output_dir)
        except Preempted as stop:
            return {"preempted": float(stop.signum)}
        metrics["params"] = float(sum(p.numel() for p in module.model.parameters()))
        metrics["time/wall_s"] = time.perf_counter() - started
        metrics["stop_reason"] = reason
        metrics["val/bleu_best_step"] = story.progress.best_step
        if dev_run:
            log.info(
                "fast dev run: one batch of each split ran, nothing was written "
                "(test BLEU %.2f on one batch)",
                metrics.get("test/bleu", math.nan),
            )
        elif trainer.is_global_zero:
            translator = Translator(
                module.model, datamodule.src_tokenizer, datamodule.tgt_tokenizer
            )
            write_test_artifacts(
                translator,
                datamodule.sources("test"),
                datamodule.references("test"),
                module.translations.get("test", {}),
                module.decoding,
                output_dir,
            )
            write_json(output_dir / "metrics.json", metrics)
            log.info("%s", summary(metrics, output_dir, story.progress))
    finally:
        finish_loggers(loggers)
        leave_process_group()
    return metrics


def _resume_point(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from, None to start afresh. ``ckpt_path=last`` continuing in
    its own folder takes that folder's ``last.ckpt``: the run Hydra picked, which every DDP rank
    shares and which another run writing meanwhile cannot displace."""
    own = output_dir / "checkpoints" / "last.ckpt"
    in_place = cfg.get("ckpt_path") == NEWEST_RUN and cfg.get("resume_to") == "same_folder"
    if in_place and own.is_file():
        return own
    return resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.log_dir))


def release_training_state(trainer: L.Trainer, module: L.LightningModule) -> None:
    """Free what only training needs before the closing test: the optimizers' state (Adam's two
    moments, twice the weights' size) and any gradients left, memory that the test's decoding
    can then take. ``last.ckpt`` already holds them for a resume, and a signal during a test
    writes no checkpoint (:class:`ResumeCheckpoint`)."""
    module.zero_grad(set_to_none=True)
    for optimizer in trainer.optimizers:
        optimizer.state.clear()


def _test_best(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, run_dir: Path
) -> dict[str, Any]:
    """Test the best checkpoint of the whole run (resumes included; the current weights when
    none was kept): the last validation's and the test's metrics, the best val BLEU and the
    tested checkpoint (relative to the run folder)."""
    # the last value of every metric logged in training, kept before a validation resets them
    metrics: dict[str, Any] = _scalars(trainer.callback_metrics)
    if "val/bleu" not in trainer.callback_metrics:  # max_steps ended before any validation
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update(_scalars(trainer.callback_metrics))
    kept = trainer.checkpoint_callback
    best_path = kept.best_model_path if isinstance(kept, ModelCheckpoint) else ""
    # no table of 18-digit test metrics: the run summary gives them
    trainer.test(
        module,
        datamodule=datamodule,
        ckpt_path=checkpoint_to_restore(best_path, trainer.global_step),
        weights_only=True,
        verbose=False,
    )
    metrics.update(_scalars(trainer.callback_metrics))
    best = kept.best_model_score if isinstance(kept, ModelCheckpoint) else None
    metrics["val/bleu_best"] = metrics.get("val/bleu", math.nan) if best is None else float(best)
    metrics["best_checkpoint"] = _relative(Path(best_path), run_dir) if best_path else None
    return metrics


def checkpoint_to_restore(best_path: str, global_step: int) -> str | None:
    """The checkpoint whose weights the closing test restores: ``best_path``, unless it was saved
    at ``global_step``, the step the weights in memory come from (no optimizer step has run
    since), or there is none. Restoring the same weights again would only map the file's pages
    in beside them: the weights' size on top of the run's memory."""
    if not best_path:
        return None
    saved_at = mapped_checkpoint(best_path).get("global_step")
    return None if saved_at == global_step else best_path


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}
