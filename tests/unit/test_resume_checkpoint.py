"""When ``ResumeCheckpoint`` writes ``last.ckpt`` in training: only after a batch that completes
an optimizer step, so that a resume never loses the batches of a step in progress."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

from seq2attn.callbacks import ResumeCheckpoint


class FakeTrainer(SimpleNamespace):
    """The parts of a Trainer the callback reads in training, recording the steps it saved at."""

    def __init__(self, global_step: int) -> None:
        super().__init__(
            global_step=global_step, world_size=1, should_stop=False, saved_at=[],
            state=SimpleNamespace(fn="fit"),
        )  # fmt: skip

    def save_checkpoint(self, path: Path) -> None:
        self.saved_at.append(self.global_step)


def _batches(callback: ResumeCheckpoint, trainer: FakeTrainer, steps: list[int]) -> None:
    """Training batches that end at the optimizer steps ``steps``."""
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    for step in steps:
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, 0)  # type: ignore[arg-type]


def test_the_periodic_save_follows_the_batch_that_completes_the_step(tmp_path: Path) -> None:
    """Resumed at step 4 with two batches a step: its first batch only accumulates (step 4 is
    the file it resumed from), and step 6 is written once, not again after the next batch."""
    trainer = FakeTrainer(global_step=4)
    callback = ResumeCheckpoint(str(tmp_path), every_n_train_steps=2)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    try:
        _batches(callback, trainer, [4, 5, 5, 6, 6, 7, 7, 8])
    finally:
        callback.teardown(trainer, None, "fit")  # type: ignore[arg-type]
    assert trainer.saved_at == [6, 8]


def test_a_signal_in_a_step_in_progress_stops_after_the_step(tmp_path: Path) -> None:
    trainer = FakeTrainer(global_step=0)
    callback = ResumeCheckpoint(str(tmp_path), every_n_train_steps=None)
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    try:
        _batches(callback, trainer, [0, 1])
        callback.received = signal.SIGTERM  # during the first batch of step 2
        _batches(callback, trainer, [1])
        assert trainer.saved_at == [] and not trainer.should_stop and not callback.stopped_by
        _batches(callback, trainer, [2])
    finally:
        callback.teardown(trainer, None, "fit")  # type: ignore[arg-type]
    assert trainer.saved_at == [2] and trainer.should_stop
    assert callback.stopped_by == signal.SIGTERM
