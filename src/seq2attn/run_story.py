"""What a training run tells its log (console and ``train.log``, rank 0): one line per validation
and a summary block at the end, as JoeyNMT and OpenNMT-py users expect to read them."""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """The validations seen so far: the best val BLEU, its step, and the training speed; and
    the points of the run's curves (``curves.png``)."""

    best_bleu: float = -math.inf
    best_step: int | None = None
    validations: int = 0
    speeds: list[float] = field(default_factory=list)
    # metric name -> [(step, value)]: train/loss, train/lr, train/tf_ratio, val/loss, val/bleu
    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def add_points(self, step: int, metrics: Mapping[str, float], names: tuple[str, ...]) -> None:
        for name in names:
            if name in metrics and math.isfinite(metrics[name]):
                self.points.setdefault(name, []).append((step, metrics[name]))

    def record(self, step: int, bleu: float, tokens_per_second: float | None) -> bool:
        """Count one validation; True when its BLEU is a new best."""
        self.validations += 1
        if tokens_per_second is not None and math.isfinite(tokens_per_second):
            self.speeds.append(tokens_per_second)
        if math.isfinite(bleu) and bleu > self.best_bleu:
            self.best_bleu, self.best_step = bleu, step
            return True
        return False

    @property
    def mean_speed(self) -> float:
        return sum(self.speeds) / len(self.speeds) if self.speeds else math.nan


def validation_line(step: int, epoch: int, metrics: Mapping[str, float], new_best: bool) -> str:
    """``step 300 (epoch 2): train loss 1.234 | val loss 0.981, ppl 2.67, BLEU 55.49 (new best)
    | 12,345 tok/s, lr 1.20e-03, teacher forcing 1.00``; a value not logged is left out."""

    def parts(*items: tuple[str, str, str]) -> str:
        return ", ".join(
            template.format(format(float(metrics[key]), spec))
            for key, template, spec in items
            if key in metrics
        )

    train = parts(("train/loss", "train loss {}", ".3f"))
    val = parts(
        ("val/loss", "val loss {}", ".3f"),
        ("val/ppl", "ppl {}", ".2f"),
        ("val/bleu", "BLEU {}", ".2f"),
        ("val/aer", "AER {}", ".3f"),
    )
    if new_best:
        val += " (new best)"
    speed = parts(
        ("train/tok_s", "{} tok/s", ",.0f"),
        ("train/lr", "lr {}", ".2e"),
        ("train/tf_ratio", "teacher forcing {}", ".2f"),
    )
    return f"step {step} (epoch {epoch}): " + " | ".join(g for g in (train, val, speed) if g)


TRAIN_CURVES = ("train/loss", "train/lr", "train/tf_ratio")
VAL_CURVES = ("val/loss", "val/bleu")


class ValidationLog(Callback):
    """Logs a line per validation (rank 0, not the sanity check), redraws ``curves.png`` in the
    run folder, and keeps the run's :class:`Progress` for the summary."""

    def __init__(self) -> None:
        self.progress = Progress()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.is_global_zero:
            metrics = {
                k: float(v) for k, v in trainer.callback_metrics.items() if k in TRAIN_CURVES
            }
            self.progress.add_points(trainer.global_step, metrics, TRAIN_CURVES)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        step = trainer.global_step
        new_best = self.progress.record(
            step, metrics.get("val/bleu", math.nan), metrics.get("train/tok_s")
        )
        self.progress.add_points(step, metrics, VAL_CURVES)
        log.info(validation_line(step, trainer.current_epoch, metrics, new_best))
        if not getattr(trainer, "fast_dev_run", False):
            draw_curves(self.progress.points, Path(trainer.default_root_dir) / "curves.png")


def draw_curves(points: Mapping[str, list[tuple[int, float]]], path: Path) -> Path:
    """``curves.png``: train and val loss, val BLEU, learning rate and teacher-forcing ratio
    against the optimizer step, one panel each; written to a temporary file and renamed, so a
    reader never sees half a picture."""
    from matplotlib.figure import Figure  # only when drawing

    panels = (
        ("loss", ("train/loss", "val/loss")),
        ("val BLEU", ("val/bleu",)),
        ("learning rate", ("train/lr",)),
        ("teacher-forcing ratio", ("train/tf_ratio",)),
    )
    figure = Figure(figsize=(12.0, 3.2), layout="constrained")
    for index, (title, names) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for name in names:
            if points.get(name):
                steps, values = zip(*points[name], strict=True)
                marker = "o" if name.startswith("val/") else ""
                axes.plot(steps, values, marker=marker, markersize=3, label=name)
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if len(names) > 1:
            axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".png.partial")
    figure.savefig(partial, format="png", dpi=80)
    partial.replace(path)
    return path


def stop_reason(trainer: L.Trainer) -> str:
    """Why ``trainer.fit`` returned: early stopping, the time limit, max_steps or max_epochs."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return (
                f"early stopping: {callback.monitor} did not improve for "
                f"{callback.patience} validations"
            )
        if isinstance(callback, Timer) and (callback.time_remaining() or 0.0) <= 0.0:
            return "the time limit (trainer.max_time) was reached"
    if getattr(trainer, "fast_dev_run", False):
        return "fast_dev_run: one batch of each split"
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"trainer.max_steps={trainer.max_steps} reached"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return f"trainer.max_epochs={trainer.max_epochs} reached"
    return f"the loop ended at step {trainer.global_step}, epoch {trainer.current_epoch}"


def summary(metrics: Mapping[str, Any], run_dir: Path, progress: Progress) -> str:
    """The end-of-run block: why it stopped, best val BLEU and its step, the checkpoint tested,
    the test scores, wall time, mean speed, the run folder and the commands that use it."""

    def number(key: str, spec: str) -> str:
        value = metrics.get(key)
        return "-" if value is None or not math.isfinite(float(value)) else format(value, spec)

    folder = shown_path(run_dir)
    best_step = metrics.get("val/bleu_best_step")
    test = f"BLEU {number('test/bleu', '.2f')}, chrF {number('test/chrf', '.2f')}"
    lines = [
        "run summary",
        f"  stopped:        {metrics.get('stop_reason', '-')}",
        f"  best val BLEU:  {number('val/bleu_best', '.2f')} at step {best_step or '-'}",
        f"  tested:         {metrics.get('best_checkpoint') or 'the final weights'}",
        f"  test:           {test}, TER {number('test/ter', '.2f')}",
        f"  wall time:      {number('time/wall_s', ',.0f')} s; "
        f"{_speed(progress.mean_speed)} over {progress.validations} validations",
        f"  run folder:     {folder}",
        f"  evaluate:       python src/eval.py ckpt_path={shlex.quote(folder)}",
        f"  translate:      python src/translate.py ckpt_path={shlex.quote(folder)} input=<file>",
        f"  resume:         python src/train.py ckpt_path={shlex.quote(folder)}",
    ]
    return "\n".join(lines)


def _speed(tokens_per_second: float) -> str:
    if not math.isfinite(tokens_per_second):
        return "no speed logged"
    return f"{tokens_per_second:,.0f} target tokens/s (mean at the validations)"


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
