"""Callbacks that are part of every training run."""

from __future__ import annotations

import io
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from seq2attn.checkpoints.saving import SelfDescribingCheckpoint
from seq2attn.data.datamodule import attached_datamodule
from seq2attn.faults import Preempted, largest_over_ranks
from seq2attn.inference import Translator
from seq2attn.inference.outputs import page_header, page_sentence, write_attention_page
from seq2attn.plotting import heatmap_png

log = logging.getLogger(__name__)


class TokenThroughput(Callback):
    """Logs ``train/tok_s``: target tokens (pieces + EOS) per second of training step time."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        tokens = batch.num_target_tokens * trainer.world_size
        pl_module.log("train/tok_s", tokens / max(elapsed, 1e-9), prog_bar=True, batch_size=1)


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without the logger's version number (``v_num``), which names
    nothing a user set."""

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class ValidationSnapshots(Callback):
    """At every validation, translate a few fixed validation sentences and send their attention
    maps and a sample table to every logger, so a dashboard shows the alignments sharpening, and
    rewrite the run's interactive attention page (``page``) with them.

    W&B gets images (``val/attention``, padded to one size) and a table (``val/samples``);
    TensorBoard gets images and text; a CSV logger gets PNG files under ``<log dir>/attention/``.
    Each heatmap's title gives the sentence, its reference and the step.
    """

    def __init__(self, num_sentences: int = 4, page: str | None = None) -> None:
        self.num_sentences = num_sentences
        self.page = Path(page) if page else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or getattr(trainer, "fast_dev_run", False)
        ):
            return  # a fast dev run writes nothing
        if not trainer.loggers and self.page is None:
            return
        datamodule = attached_datamodule(trainer)
        sources = datamodule.sources("val")[: self.num_sentences]
        references = datamodule.references("val")[: self.num_sentences]
        translator = Translator(
            pl_module.model,  # type: ignore[arg-type]
            datamodule.src_tokenizer,
            datamodule.tgt_tokenizer,
        )
        translations = translator.translate(sources, pl_module.decoding)  # type: ignore[arg-type]
        rows = [[t.source, ref, t.text] for t, ref in zip(translations, references, strict=True)]
        step = trainer.global_step
        pngs = [
            heatmap_png(replace(m, title=f"{n}. {t.source}\nreference: {ref}\nstep {step}"))
            for n, (t, ref) in enumerate(zip(translations, references, strict=True), start=1)
            if (m := t.attention_map) is not None
        ]
        if self.page is not None:
            config = next(
                (
                    c.config
                    for c in getattr(trainer, "callbacks", [])
                    if isinstance(c, SelfDescribingCheckpoint)
                ),
                {},
            )
            write_attention_page(
                page_header(
                    f"seq2attn attention at step {step}",
                    f"the model of this run at step {step} (epoch {trainer.current_epoch})",
                    config,
                    pl_module.decoding,  # type: ignore[arg-type]
                ),
                [
                    page_sentence(t, datamodule.tgt_tokenizer, ref)
                    for t, ref in zip(translations, references, strict=True)
                ],
                self.page,
            )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_wandb(logger, pngs, rows, step)
            elif isinstance(logger, TensorBoardLogger):
                _log_tensorboard(logger, pngs, rows, step)
            elif isinstance(logger, CSVLogger):
                folder = Path(logger.log_dir) / "attention"
                folder.mkdir(parents=True, exist_ok=True)
                for i, png in enumerate(pngs):
                    (folder / f"step{step:07d}_sentence{i}.png").write_bytes(png)


def _log_wandb(logger: WandbLogger, pngs: list[bytes], rows: list[list[str]], step: int) -> None:
    images = equal_sizes([Image.open(io.BytesIO(png)).convert("RGB") for png in pngs])
    if images:
        logger.log_image(key="val/attention", images=images, step=step)
    logger.log_table(
        key="val/samples", columns=["source", "reference", "hypothesis"], data=rows, step=step
    )


def equal_sizes(images: list[Image.Image]) -> list[Image.Image]:
    """The images on white canvases of the largest width and height among them (W&B shows a
    step's images at one size and warns when they differ)."""
    if not images:
        return images
    size = (max(i.width for i in images), max(i.height for i in images))
    padded = []
    for image in images:
        canvas = Image.new("RGB", size, "white")
        canvas.paste(image, (0, 0))
        padded.append(canvas)
    return padded


def _log_tensorboard(
    logger: TensorBoardLogger, pngs: list[bytes], rows: list[list[str]], step: int
) -> None:
    for i, png in enumerate(pngs):
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        logger.experiment.add_image(f"val/attention/{i}", image, step, dataformats="HWC")
    table = "\n".join(f"| {s} | {r} | {h} |" for s, r, h in rows)
    header = "| source | reference | hypothesis |\n|-|-|-|\n"
    logger.experiment.add_text("val/samples", header + table, step)


class ResumeCheckpoint(Callback):
    """Keeps ``last.ckpt`` fresh for resuming: every ``every_n_train_steps`` optimizer steps, and
    on SIGTERM or SIGINT (pre-emption, Ctrl-C), which then stops the run cleanly. Both are
    written after the batch that completes an optimizer step (under gradient accumulation, the
    batches before it would be lost).

    A signal on any rank is agreed on by every rank at the next batch boundary (the signal
    number's maximum over ranks, :mod:`seq2attn.faults`). In training, every rank takes part in
    writing ``last.ckpt`` after the step and the run stops. In a validation or test, the batch in
    progress is finished, ``last.ckpt`` (the training state of the last step; the validation is
    not needed to resume) is written, and :class:`Preempted` ends the run. A second signal on a
    rank stops that process at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.received = 0  # the signal this process received, 0 for none
        self.stopped_by = 0  # the signal the ranks agreed to stop on, 0 for none
        self._previous: dict[int, Any] = {}
        self._step = 0  # the optimizer step the last training batch ended at

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def _install(self) -> None:
        # called at the start of each stage: Lightning installs its own handlers just before
        for sig in self.SIGNALS:
            if signal.getsignal(sig) != self._handle:
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # the sanity check, and validations outside training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()
        self._step = trainer.global_step  # restored by now, on a resume

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:  # else Lightning has put its original back
                signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum

    def _agreed(self, trainer: L.Trainer) -> int:
        return largest_over_ranks(trainer, self.received)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self._agreed(trainer)  # on every batch: every rank takes part
        if trainer.global_step == self._step:
            return  # a step in progress (gradient accumulation): a save would lose its batches
        self._step = trainer.global_step
        periodic = self.every_n_train_steps and self._step % self.every_n_train_steps == 0
        if stop or periodic:
            trainer.save_checkpoint(self.path)
        if stop:
            self.stopped_by = stop
            log.warning("%s", self._message(trainer, "after the step"))
            pl_module.log("trainer/stopped_by", float(stop), batch_size=1)
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the final state (Lightning's last.ckpt is the last validation's), so that a run given
        # more steps resumes where this one ended
        if not self.stopped_by:
            trainer.save_checkpoint(self.path)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._stop_evaluation(trainer, "validation")

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._stop_evaluation(trainer, "test")

    def _stop_evaluation(self, trainer: L.Trainer, stage: str) -> None:
        self.stopped_by = self._agreed(trainer)
        if not self.stopped_by:
            return
        if trainer.state.fn == "fit" and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)
        message = self._message(trainer, f"during the {stage}")
        log.warning("%s", message)
        raise Preempted(self.stopped_by, message)

    def _message(self, trainer: L.Trainer, when: str) -> str:
        name = signal.Signals(self.stopped_by).name
        if trainer.global_step == 0:
            return f"received {name} {when}, before any training step: stopped"
        written = self.path if trainer.state.fn == "fit" else "nothing new"
        return (
            f"received {name} {when} at step {trainer.global_step}: wrote {written} and "
            f"stopped; resume with ckpt_path={self.dirpath.parent}"
        )
