"""Entry points behind the ``src/*.py`` Hydra shims."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from seq2attn.callbacks import TokenThroughput
from seq2attn.checkpoint import SelfDescribingCheckpoint
from seq2attn.config import DecodingSchema, check, validate
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.module import Seq2SeqModule, translate_batch
from seq2attn.plotting import AttentionMap, save_heatmaps

log = logging.getLogger(__name__)

PACKAGES = (
    "seq2attn",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "sentencepiece",
    "sacrebleu",
)
SAMPLES = 10
HEATMAPS = 3


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate the config, train, test the best checkpoint and write the run's artifacts."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    config = resolved_config(cfg)
    if _is_rank_zero():
        write_run_record(config, output_dir)

    datamodule: TranslationDataModule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += [TokenThroughput(), SelfDescribingCheckpoint(config)]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_metrics = _scalars(trainer.callback_metrics)
        trainer.test(module, datamodule=datamodule, ckpt_path=_best_checkpoint(trainer))
        metrics = {**fit_metrics, **_scalars(trainer.callback_metrics)}
        if trainer.is_global_zero:
            write_test_artifacts(module, datamodule, output_dir)
            _write_json(output_dir / "metrics.json", metrics)
            log.info(
                "test BLEU %.2f (outputs in %s)", metrics.get("test/bleu", math.nan), output_dir
            )
    finally:
        # free the process group so that a following run in this process (tests, multirun
        # with the basic launcher) can start its own
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return metrics


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain data, without Hydra's own node."""
    return {
        str(key): OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def build_module(cfg: DictConfig, datamodule: TranslationDataModule) -> Seq2SeqModule:
    """Build the network at the tokenizers' vocabulary sizes and wrap it for training."""
    model = instantiate(
        cfg.model,
        src_vocab_size=datamodule.src_tokenizer.vocab_size,
        tgt_vocab_size=datamodule.tgt_tokenizer.vocab_size,
    )
    return Seq2SeqModule(
        model=model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        teacher_forcing=instantiate(cfg.teacher_forcing),
        decoding=check(DecodingSchema, cfg.decoding, "decoding"),
        label_smoothing=float(cfg.get("label_smoothing") or 0.0),
    )


def write_run_record(config: dict[str, Any], output_dir: Path) -> None:
    """Keep what reproduces the run: the composed config, the command line, commit, versions."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    _write_json(
        output_dir / "run.json",
        {
            "argv": sys.argv,
            "git": _git_state(),
            "packages": {name: _version(name) for name in PACKAGES},
            "python": sys.version.split()[0],
        },
    )


def write_test_artifacts(
    module: Seq2SeqModule, datamodule: TranslationDataModule, output_dir: Path
) -> None:
    """Test hypotheses, a few side-by-side samples and an attention heatmap PNG."""
    translations = module.translations.get("test", {})
    sources, references = datamodule.sources("test"), datamodule.references("test")
    indices = sorted(translations)
    (output_dir / "test_hypotheses.txt").write_text(
        "".join(translations[i] + "\n" for i in indices)
    )
    samples = [
        f"SRC: {sources[i]}\nREF: {references[i]}\nHYP: {translations[i]}\n"
        for i in indices[:SAMPLES]
    ]
    (output_dir / "samples.txt").write_text("\n".join(samples))
    maps = attention_maps(module, datamodule, sources[:HEATMAPS])
    if maps:
        save_heatmaps(maps, output_dir / "attention.png")


@torch.no_grad()
def attention_maps(
    module: Seq2SeqModule, datamodule: TranslationDataModule, sentences: list[str]
) -> list[AttentionMap]:
    """Greedy-decode ``sentences`` one by one and return their attention maps (none: empty)."""
    module.eval()
    src_tok, tgt_tok = datamodule.src_tokenizer, datamodule.tgt_tokenizer
    maps = []
    for ids in src_tok.encode(sentences):
        src = torch.tensor([ids], device=module.device)
        lengths = torch.tensor([len(ids)], device=module.device)
        hyp = translate_batch(module.model, src, lengths, module.decoding)[0][0]
        if hyp.attention is None:
            return []
        maps.append(
            AttentionMap(
                weights=hyp.attention.float().cpu().numpy(),
                source=src_tok.pieces(ids),
                target=tgt_tok.pieces(hyp.tokens) + ["</s>"],
            )
        )
    return maps


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
