"""Entry points behind the ``src/*.py`` Hydra shims."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import netrc
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO, TypeVar

import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from seq2attn.callbacks import ResumeCheckpoint, TokenThroughput
from seq2attn.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    SelfDescribingCheckpoint,
    load_checkpoints,
)
from seq2attn.config import ConfigError, DecodingSchema, check, validate
from seq2attn.data.corpus import CorpusError
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.metrics import corpus_scores
from seq2attn.module import Seq2SeqModule
from seq2attn.plotting import AttentionMap, PageEntry, attention_page, heatmap_png, save_heatmaps
from seq2attn.runtime import configure_cpu
from seq2attn.translation import Translation, attention_map, translate_sentences

log = logging.getLogger(__name__)
# epoch metrics are computed over the hypotheses of every rank already (metrics.py)
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level")

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
EVAL_SPLITS = ("val", "test")


INPUT_ERRORS = (ConfigError, CorpusError, CheckpointError)
T = TypeVar("T")


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a task for a command-line shim: bad input (config, data files, checkpoints) ends the
    process with its message and exit code 2 instead of a traceback."""
    try:
        return task(cfg)
    except INPUT_ERRORS as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate the config, train, test the best checkpoint and write the run's artifacts.

    ``ckpt_path`` resumes: a checkpoint file, a run folder (its ``last.ckpt``) or ``last`` (the
    newest ``last.ckpt`` under ``paths.log_dir``). A run stopped by SIGTERM/SIGINT writes
    ``last.ckpt``, skips the test and returns ``{"preempted": signal number}``.
    """
    started = time.perf_counter()
    validate(cfg)
    configure_cpu(cfg.get("cpu"))
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    config = resolved_config(cfg)
    resume_from = resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.log_dir))
    if _is_rank_zero():
        write_run_record(config, output_dir, resume_from)

    datamodule: TranslationDataModule = build_datamodule(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += [TokenThroughput(), SelfDescribingCheckpoint(config)]
    resume = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    loggers = build_loggers(cfg, config)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        if resume is not None and resume.received is not None:
            return {"preempted": float(resume.received)}
        if "val/bleu" not in trainer.callback_metrics:  # max_steps ended before any validation
            trainer.validate(module, datamodule=datamodule, verbose=False)
        fit_metrics = _scalars(trainer.callback_metrics)
        best = _best_checkpoint(trainer)
        trainer.test(module, datamodule=datamodule, ckpt_path=best)
        metrics = {**fit_metrics, **_scalars(trainer.callback_metrics)}
        metrics["val/bleu_best"] = _best_score(trainer, metrics)
        metrics["params"] = float(sum(p.numel() for p in module.model.parameters()))
        metrics["time/wall_s"] = time.perf_counter() - started
        if trainer.is_global_zero:
            write_test_artifacts(module, datamodule, output_dir)
            _write_json(output_dir / "metrics.json", metrics)
            log.info(
                "test BLEU %.2f (outputs in %s)", metrics.get("test/bleu", math.nan), output_dir
            )
    finally:
        finish_loggers(loggers)
        # free the process group so that a following run in this process (tests, multirun
        # with the basic launcher) can start its own
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return metrics


def resume_checkpoint(ckpt_path: str | None, log_dir: Path) -> str | None:
    """The checkpoint file a run resumes from (see :func:`train`); None starts afresh."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        candidates = sorted(
            (log_dir / "train").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            raise ConfigError(
                f"ckpt_path=last: no checkpoints/last.ckpt under {log_dir / 'train'} to resume"
            )
        return str(candidates[-1])
    path = Path(ckpt_path)
    if path.is_file():
        return str(path)
    last = path / "checkpoints" / "last.ckpt"
    if last.is_file():
        return str(last)
    raise ConfigError(
        f"ckpt_path={ckpt_path}: neither a checkpoint file nor a run folder with "
        "checkpoints/last.ckpt"
    )


def build_loggers(cfg: DictConfig, config: dict[str, Any]) -> list[Logger]:
    """The configured loggers, each given the full composed config as hyperparameters."""
    loggers: list[Logger] = []
    for node in cfg.logger.values():
        if node is None:
            continue
        if str(node.get("_target_", "")).endswith("WandbLogger"):
            node = wandb_settings(node)
        loggers.append(instantiate(node))
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def wandb_settings(node: DictConfig) -> DictConfig:
    """Run W&B offline (saying how to sync later) when there is no API key or WANDB_MODE=offline."""
    offline = os.environ.get("WANDB_MODE") in {"offline", "dryrun"} or not _wandb_api_key()
    if offline and not node.get("offline"):
        log.info(
            "W&B: no API key (or WANDB_MODE=offline): logging offline under %s; upload later with "
            "`wandb sync %s/wandb/offline-run-*`",
            node.save_dir,
            node.save_dir,
        )
        node = OmegaConf.merge(node, {"offline": True})  # type: ignore[assignment]
    return node


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs even when training failed, so the next run in this process starts clean."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and _is_rank_zero():
            import wandb

            wandb.finish()


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain data, without Hydra's own node."""
    return {
        str(key): OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Translate a split with a checkpoint, score it with sacreBLEU and write the outputs."""
    configure_cpu(cfg.get("cpu"))
    decoding = check(DecodingSchema, cfg.decoding, "decoding")
    if cfg.split not in EVAL_SPLITS:
        raise ConfigError(f"split={cfg.split}: must be one of {', '.join(EVAL_SPLITS)}")
    checkpoint = load_checkpoints(checkpoint_paths(cfg.ckpt_path))
    data = data_config_for(checkpoint.config["data"], cfg.data)
    pairs = instantiate(OmegaConf.create(data["corpus"])).splits()[cfg.split]
    used = ", ".join(map(str, checkpoint.members)) or checkpoint.path
    log.info("translating %d sentences of %s with %s", len(pairs), cfg.split, used)
    translations, stats = translate_sentences(
        checkpoint.model,
        checkpoint.src_tokenizer,
        checkpoint.tgt_tokenizer,
        pairs.src,
        decoding,
        cfg.max_tokens,
        cfg.max_source_length,
        progress=True,
    )
    hypotheses = [t.text for t in translations]
    scores, signatures = corpus_scores(hypotheses, pairs.tgt)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{cfg.split}.hyp.txt").write_text("".join(h + "\n" for h in hypotheses))
    (output_dir / f"{cfg.split}.ref.txt").write_text("".join(r + "\n" for r in pairs.tgt))
    if decoding.n_best > 1:
        _write_nbest(output_dir / f"{cfg.split}.nbest.txt", translations, checkpoint.tgt_tokenizer)
    _write_json(
        output_dir / "scores.json",
        {
            **scores,
            "signatures": signatures,
            "checkpoint": [str(path) for path in checkpoint.members] or str(checkpoint.path),
            "split": cfg.split,
            "data": data,
            "decoding": OmegaConf.to_container(cfg.decoding, resolve=True),
            "sentences": stats.sentences,
            "decode_seconds": stats.seconds,
        },
    )
    for name, value in scores.items():
        log.info("%s = %.2f  %s", name.upper(), value, signatures[name])
    log.info("outputs in %s", output_dir)
    return scores


def translate(cfg: DictConfig) -> None:
    """Translate lines of ``cfg.input`` (or stdin) to ``cfg.output`` (or stdout), in order."""
    configure_cpu(cfg.get("cpu"))
    decoding = check(DecodingSchema, cfg.decoding, "decoding")
    checkpoint = load_checkpoints(checkpoint_paths(cfg.ckpt_path))
    attention_dir = Path(cfg.attention_dir) if cfg.attention_dir else None
    entries: list[PageEntry] = []
    with _open_text(cfg.input, "r") as source, _open_text(cfg.output, "w") as sink:
        for chunk in _chunks(source, cfg.chunk_size):
            translations, _ = translate_sentences(
                checkpoint.model,
                checkpoint.src_tokenizer,
                checkpoint.tgt_tokenizer,
                chunk,
                decoding,
                cfg.max_tokens,
                cfg.max_source_length,
            )
            sink.writelines(t.text + "\n" for t in translations)
            sink.flush()
            if attention_dir is not None:
                entries += _page_entries(translations, attention_dir, first=len(entries) + 1)
    if attention_dir is not None:
        page = attention_dir / "attention.html"
        page.write_text(attention_page(entries))
        log.info("attention maps of %d sentences in %s", len(entries), page)


def checkpoint_paths(ckpt_path: Any) -> str | list[str]:
    """``ckpt_path`` as given: one checkpoint (or run folder), or a list of them to ensemble."""
    if OmegaConf.is_list(ckpt_path):
        return [str(path) for path in ckpt_path]
    return str(ckpt_path)


def data_config_for(stored: dict[str, Any], given: DictConfig) -> dict[str, Any]:
    """The checkpoint's data config with the non-null keys of ``given`` applied.

    A whole data group (it has ``_target_``) replaces the stored config; a single key also sets
    the corpus key of the same name (``data.test_split`` -> ``data.corpus.test_split``).
    """
    given_values = OmegaConf.to_container(given, resolve=True)
    assert isinstance(given_values, dict)
    overrides = {str(key): value for key, value in given_values.items() if value is not None}
    if "_target_" in overrides:
        return overrides
    data = copy.deepcopy(stored)
    for key, value in overrides.items():
        data[key] = value
        if key in data.get("corpus", {}):
            data["corpus"][key] = value
    return data


def _page_entries(translations: list[Translation], folder: Path, first: int) -> list[PageEntry]:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, translation in enumerate(translations, start=first):
        png = None
        if translation.nbest and translation.nbest[0].attention is not None:
            png = heatmap_png(attention_map(translation))
            (folder / f"sentence_{number:05d}.png").write_bytes(png)
        entries.append(PageEntry(translation.source, translation.text, png))
    return entries


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n").strip())
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def _open_text(path: str | None, mode: str) -> Iterator[TextIO]:
    """A file (UTF-8; undecodable bytes replaced) or stdin/stdout when ``path`` is null."""
    if path is None:
        yield sys.stdin if mode == "r" else sys.stdout
        return
    with open(path, mode, encoding="utf-8", errors="replace") as handle:
        yield handle  # type: ignore[misc]


def _write_nbest(path: Path, translations: list[Translation], tokenizer: Tokenizer) -> None:
    """Moses-style n-best list: ``sentence ||| hypothesis ||| model score``."""
    with path.open("w") as handle:
        for index, translation in enumerate(translations):
            texts = tokenizer.decode([hyp.tokens for hyp in translation.nbest])
            for hyp, text in zip(translation.nbest, texts, strict=True):
                handle.write(f"{index} ||| {text} ||| {hyp.score:.4f}\n")


def build_module(cfg: DictConfig, datamodule: TranslationDataModule) -> Seq2SeqModule:
    """Build the network at the tokenizers' vocabulary sizes and wrap it for training."""
    one_vocabulary = datamodule.src_tokenizer is datamodule.tgt_tokenizer
    if cfg.model.get("share_embeddings") and not one_vocabulary:
        raise ConfigError(
            "model.share_embeddings=true needs one vocabulary for both sides: set "
            "data.joint_vocab=true or give data.spm_model (this run has one per side)"
        )
    model = instantiate(
        cfg.model,
        src_vocab_size=datamodule.src_tokenizer.vocab_size,
        tgt_vocab_size=datamodule.tgt_tokenizer.vocab_size,
    )
    scheduler = (
        OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    )
    interval = scheduler.pop("interval", "epoch") if isinstance(scheduler, dict) else "epoch"
    return Seq2SeqModule(
        model=model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(scheduler) if scheduler else None,
        scheduler_interval=interval,
        teacher_forcing=instantiate(cfg.teacher_forcing),
        decoding=check(DecodingSchema, cfg.decoding, "decoding"),
        label_smoothing=float(cfg.get("label_smoothing") or 0.0),
        nonfinite_loss=cfg.get("nonfinite_loss", "stop"),
    )


def write_run_record(config: dict[str, Any], output_dir: Path, resumed_from: str | None) -> None:
    """Keep what reproduces the run: the composed config, the command line and overrides, the git
    commit (and whether the tree was dirty), the package versions."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    _write_json(
        output_dir / "run.json",
        {
            "argv": sys.argv,
            "overrides": _hydra_overrides(),
            "resumed_from": resumed_from,
            "git": _git_state(),
            "packages": {name: _version(name) for name in PACKAGES},
            "python": sys.version.split()[0],
        },
    )


def write_test_artifacts(
    module: Seq2SeqModule, datamodule: TranslationDataModule, output_dir: Path
) -> None:
    """Test hypotheses, a few side-by-side samples and an attention heatmap PNG."""
    sources, references = datamodule.sources("test"), datamodule.references("test")
    translations = module.translations.get("test", {})
    if len(translations) < len(sources):  # a limited test, or one run in spawned processes
        done, _ = translate_sentences(
            module.model,
            datamodule.src_tokenizer,
            datamodule.tgt_tokenizer,
            sources,
            module.decoding,
        )
        translations = {i: t.text for i, t in enumerate(done)}
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


def attention_maps(
    module: Seq2SeqModule, datamodule: TranslationDataModule, sentences: list[str]
) -> list[AttentionMap]:
    """Attention maps of ``sentences`` under the module's decoding (none: empty list)."""
    translations, _ = translate_sentences(
        module.model, datamodule.src_tokenizer, datamodule.tgt_tokenizer, sentences, module.decoding
    )
    return [attention_map(t) for t in translations if t.nbest and t.nbest[0].attention is not None]


def _best_score(trainer: L.Trainer, metrics: dict[str, float]) -> float:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_score is not None:
        return float(callback.best_model_score)
    return metrics.get("val/bleu", math.nan)


def _hydra_overrides() -> list[str]:
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _wandb_api_key() -> str | None:
    """WANDB_API_KEY, or the key `wandb login` stored in ~/.netrc."""
    if key := os.environ.get("WANDB_API_KEY"):
        return key
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None


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
