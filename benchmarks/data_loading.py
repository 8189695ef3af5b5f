"""Does data loading keep up with training? Multi30k de-en batches against training steps.

    python benchmarks/data_loading.py [--root ../shared/data/multi30k] [--steps 20]

Builds the ``data=multi30k`` data module (cached after the first run), then measures
(1) the train dataloader alone, for ``num_workers`` 0 and 2: batches/s, target tokens/s and ms per
batch over one epoch; (2) ``--steps`` training steps of the default model in a Lightning Trainer,
split into the time spent waiting for the next batch and the step itself (forward, backward,
optimizer), from the ``on_train_batch_start``/``_end`` hooks. Loading must be a small fraction
of a step. Writes benchmarks/results/data_loading.json and data_loading.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir

from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.tasks import build_module

RESULTS = Path(__file__).resolve().parent / "results"
CONF = Path(__file__).resolve().parents[1] / "conf"


class StepTimer(L.Callback):
    """Per step: seconds waiting for the batch (end of the last step -> start of this one)."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.steps: list[float] = []
        self._mark = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self.waits.append(now - self._mark)
        self._mark = now

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        self.steps.append(now - self._mark)
        self._mark = now


def loader_speed(datamodule: TranslationDataModule, workers: int) -> dict:
    datamodule.num_workers = workers
    loader = datamodule.train_dataloader()
    start, batches, tokens = time.perf_counter(), 0, 0
    for batch in loader:
        batches += 1
        tokens += batch.num_target_tokens
    seconds = time.perf_counter() - start
    return {
        "workers": workers,
        "batches": batches,
        "seconds": seconds,
        "batches_per_s": batches / seconds,
        "target_tokens_per_s": tokens / seconds,
        "ms_per_batch": 1000 * seconds / batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = os.environ.get("SEQ2ATTN_DATA", "../shared/data/multi30k")
    parser.add_argument("--root", default=default_root)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    args = parser.parse_args()

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "train",
            overrides=["data=multi30k", f"data.root={args.root}", "paths.output_dir=unused"],
        )
    datamodule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    loading = [loader_speed(datamodule, workers) for workers in (0, 2)]

    datamodule.num_workers = 0
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as folder:
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=args.warmup_steps + args.steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            callbacks=[timer],
            default_root_dir=folder,
        )
        trainer.fit(build_module(cfg, datamodule), datamodule=datamodule)
    waits, steps = timer.waits[args.warmup_steps :], timer.steps[args.warmup_steps :]
    training = {
        "steps": len(steps),
        "mean_wait_ms": 1000 * sum(waits) / len(waits),
        "mean_step_ms": 1000 * sum(steps) / len(steps),
        "wait_fraction": sum(waits) / (sum(waits) + sum(steps)),
    }
    write({"loading": loading, "training": training, "cpus": os.cpu_count(),
           "python": platform.python_version(), "max_tokens": cfg.data.max_tokens})  # fmt: skip


def write(report: dict) -> None:
    training = report["training"]
    lines = [
        f"# Data loading on Multi30k de-en (max_tokens={report['max_tokens']}, "
        f"{report['cpus']} CPUs)",
        "",
        "| train dataloader alone | batches/s | target tokens/s | ms/batch |",
        "|---|---|---|---|",
        *(
            f"| num_workers={r['workers']} | {r['batches_per_s']:.0f} | "
            f"{r['target_tokens_per_s']:,.0f} | {r['ms_per_batch']:.1f} |"
            for r in report["loading"]
        ),
        "",
        f"| default model, {training['steps']} training steps | ms |",
        "|---|---|",
        f"| waiting for the next batch (mean) | {training['mean_wait_ms']:.1f} |",
        f"| training step (mean) | {training['mean_step_ms']:.0f} |",
        f"| share of time waiting for data | {100 * training['wait_fraction']:.2f} % |",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_loading.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "data_loading.md").write_text(markdown)


if __name__ == "__main__":
    main()
