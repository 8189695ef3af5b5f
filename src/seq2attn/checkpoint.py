"""Self-describing checkpoints: the run's config and tokenizers travel with the weights.

Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a file from
an untrusted source cannot execute code. Anything that is not a seq2attn checkpoint is refused.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from seq2attn.data.cache import atomic_write_bytes
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.module import attached_datamodule

CHECKPOINT_FORMAT = "seq2attn-checkpoint"
CHECKPOINT_VERSION = 1
MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, foreign or incomplete."""


def describe(config: dict[str, Any], src: Tokenizer, tgt: Tokenizer) -> dict[str, Any]:
    """Metadata stored under ``checkpoint["seq2attn"]``; plain types, so weights-only loadable."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "src_spm": src.proto,
        "tgt_spm": tgt.proto,
    }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, then renames it into place,
    so a process killed during a save leaves the previous checkpoint intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class SelfDescribingCheckpoint(Callback):
    """Adds :func:`describe` to every checkpoint Lightning writes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        datamodule = attached_datamodule(trainer)
        checkpoint["seq2attn"] = describe(
            self.config, datamodule.src_tokenizer, datamodule.tgt_tokenizer
        )


@dataclass
class LoadedCheckpoint:
    """A model ready to translate, with the tokenizers and config it was trained with."""

    path: Path
    config: dict[str, Any]
    model: Seq2Seq
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (else its ``last.ckpt``)."""
    path = Path(path)
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = sorted(folder.glob("best-*.ckpt")) + [folder / "last.ckpt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = [str(path)] + [str(c) for c in candidates]
    raise CheckpointError(f"no checkpoint found; searched: {', '.join(searched)}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (weights-only), validated as a seq2attn checkpoint."""
    path = resolve_checkpoint(path)
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to load; it holds Python objects other than tensors and plain "
            f"containers, which weights-only loading never executes ({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is corrupted, truncated or not a "
            f"PyTorch file ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
    meta = contents.get("seq2attn") if isinstance(contents, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a seq2attn checkpoint (no 'seq2attn' metadata); only checkpoints "
            "written by src/train.py can be loaded"
        )
    if meta.get("version") != CHECKPOINT_VERSION or "state_dict" not in contents:
        raise CheckpointError(
            f"{path}: seq2attn checkpoint version {meta.get('version')} is not supported "
            f"(this version reads {CHECKPOINT_VERSION})"
        )
    return contents


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Rebuild the trained model (in eval mode) and its tokenizers from a checkpoint."""
    resolved = resolve_checkpoint(path)
    contents = read_checkpoint(resolved)
    meta = contents["seq2attn"]
    src_tokenizer = Tokenizer.from_proto(meta["src_spm"])
    tgt_tokenizer = Tokenizer.from_proto(meta["tgt_spm"])
    model = instantiate(
        OmegaConf.create(meta["config"]["model"]),
        src_vocab_size=src_tokenizer.vocab_size,
        tgt_vocab_size=tgt_tokenizer.vocab_size,
    )
    weights = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in contents["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{resolved}: weights do not fit the stored model config: {error}"
        ) from error
    return LoadedCheckpoint(resolved, meta["config"], model.eval(), src_tokenizer, tgt_tokenizer)
