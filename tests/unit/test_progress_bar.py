"""The training progress bar shows no logger version number (v_num)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from seq2attn.callbacks import ProgressBar


def test_the_progress_bar_drops_v_num_and_keeps_the_rest(tmp_path: Path) -> None:
    bar = ProgressBar()
    trainer = L.Trainer(
        logger=CSVLogger(tmp_path), callbacks=[bar], enable_model_summary=False, max_steps=1
    )
    module = L.LightningModule()
    assert "v_num" in TQDMProgressBar.get_metrics(bar, trainer, module)  # Lightning's own
    trainer.progress_bar_metrics["train/loss"] = 1.5
    assert bar.get_metrics(trainer, module) == {"train/loss": 1.5}
