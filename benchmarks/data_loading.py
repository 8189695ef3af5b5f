"""Does data loading keep up with training? Multi30k de-en batches against training steps.

    python -m benchmarks.data_loading [--root ../shared/data/multi30k] [--steps 20]

Builds the ``data=multi30k`` data module (cached after the first run), then measures
(1) the train dataloader alone, for ``num_workers`` 0 and 2: batches/s, target tokens/s and ms per
batch over one epoch; (2) ``--steps`` training steps of the default model in a Lightning Trainer,
split into the time spent waiting for the next batch and the step itself (forward, backward,
optimizer), from the ``on_train_batch_start``/``_end`` hooks. Loading must be a small fraction
of a step. Writes benchmarks/results/data_loading.json and data_loading.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir

from benchmarks.common import (
    CONF,
    StepTimer,
    corpus,
    lightning_hooks,
    machine,
    require,
    shown,
    table,
    write_result,
)
from seq2attn.config import validate
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.module import build_module


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
    parser.add_argument("--root", default=shown(corpus()), help="the Multi30k folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    args = parser.parse_args()
    require("python -m benchmarks.data_loading", Path(args.root))

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "train",
            overrides=["data=multi30k", f"data.root={args.root}", "paths.output_dir=unused"],
        )
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
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
            callbacks=[lightning_hooks(timer, lambda batch: {})],
            default_root_dir=folder,
        )
        trainer.fit(build_module(cfg, run, datamodule), datamodule=datamodule)
    timed = timer.steady(args.warmup_steps)
    training = {
        "steps": timed["steps"],
        "mean_wait_ms": 1000 * timed["wait_s"] / timed["steps"],
        "mean_step_ms": 1000 * timed["step_s"] / timed["steps"],
        "wait_fraction": timed["wait_s"] / (timed["wait_s"] + timed["step_s"]),
    }
    report: dict[str, Any] = {
        "loading": loading,
        "training": training,
        "machine": machine(),
        "max_tokens": cfg.data.max_tokens,
    }
    markdown = _markdown(report)
    write_result("data_loading", report, markdown)
    print(markdown)


def _markdown(report: dict[str, Any]) -> str:
    training = report["training"]
    loaders = table(
        ["train dataloader alone", "batches/s", "target tokens/s", "ms/batch"],
        [
            [
                f"num_workers={r['workers']}",
                f"{r['batches_per_s']:.0f}",
                f"{r['target_tokens_per_s']:,.0f}",
                f"{r['ms_per_batch']:.1f}",
            ]
            for r in report["loading"]
        ],
    )
    steps = table(
        [f"default model, {training['steps']} training steps", "ms"],
        [
            ["waiting for the next batch (mean)", f"{training['mean_wait_ms']:.1f}"],
            ["training step (mean)", f"{training['mean_step_ms']:.0f}"],
            ["share of time waiting for data", f"{100 * training['wait_fraction']:.2f} %"],
        ],
    )
    title = (
        f"# Data loading on Multi30k de-en (max_tokens={report['max_tokens']}, "
        f"{report['machine']['cores']} CPUs)\n"
    )
    return f"{title}\n{loaders}\n{steps}"


if __name__ == "__main__":
    main()
