"""seq2attn's training measurement in its own process, for the peer benchmark (benchmarks.speed;
decoding is measured through ``src/translate.py``, as a user runs it).

    python -m benchmarks.seq2attn_speed train --out r1.json --save r1.ckpt -- experiment=bench_r1

``train`` runs the real training loop (Lightning, the data module, the config's precision) for
warm-up + timed steps with no validation, checkpointing or logging, and reports steady-state
target tokens per second: pieces + EOS (the positions that carry a loss) of the timed steps over
the wall time from the end of the last warm-up step to the end of the last timed step.
It prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from benchmarks.common import CONF, StepTimer, lightning_hooks, training_only_trainer
from seq2attn.checkpoints.saving import SelfDescribingCheckpoint
from seq2attn.config import validate
from seq2attn.cpu_tuning import configure_cpu
from seq2attn.data.datamodule import build_datamodule
from seq2attn.data.tokenizer import PAD_ID
from seq2attn.distillation import load_teacher
from seq2attn.flops import count_flops
from seq2attn.module import build_module
from seq2attn.run_record import resolved_config


def batch_counts(batch: Any) -> dict[str, float]:
    """What a training step processed: target tokens (pieces + EOS), source tokens and
    source x target position pairs (the attention scores' count)."""
    target_lengths = (batch.tgt_out != PAD_ID).sum(dim=1)
    return {
        "target_tokens": batch.num_target_tokens,
        "source_tokens": int(batch.src_lengths.sum()),
        "pairs": int((batch.src_lengths * target_lengths).sum()),
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=args.overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(args.out).resolve().parent)
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
    run = validate(cfg)
    configure_cpu(run.cpu)
    L.seed_everything(cfg.seed)
    teacher = load_teacher(run.distillation, run.model.share_embeddings)
    tokenizers = None if teacher is None else teacher.tokenizers
    datamodule = build_datamodule(run.data, tokenizers)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule, teacher)
    timer = StepTimer()
    config = resolved_config(cfg)
    trainer = training_only_trainer(
        cfg.trainer,
        args.warmup + args.steps,
        [lightning_hooks(timer, batch_counts), SelfDescribingCheckpoint(config)],
    )
    trainer.fit(module, datamodule=datamodule)
    if args.save:
        trainer.save_checkpoint(args.save)
    timed = timer.steady(args.warmup)
    seconds, totals = timed["seconds"], timed["totals"]
    tokens = totals["target_tokens"]
    flops = count_flops(
        module.model,
        source_tokens=totals["source_tokens"],
        target_tokens=tokens,
        pairs=totals["pairs"],
    )
    return {
        "overrides": args.overrides,
        "precision": str(cfg.trainer.precision),
        "timed_steps": timed["steps"],
        "seconds": seconds,
        "tok_s": tokens / seconds,
        "train_flops_per_target_token": flops.training / tokens,
        "train_flop_s": flops.training / seconds,
        "params": sum(p.numel() for p in module.model.parameters()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="steady-state training throughput")
    train_parser.add_argument("--warmup", type=int, default=50, help="untimed first steps")
    train_parser.add_argument("--steps", type=int, default=200, help="timed steps")
    train_parser.add_argument("--save", default=None, help="write the final checkpoint here")
    train_parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    train_parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    report = train(args)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
