"""Self-describing checkpoints: the run's config and tokenizers travel with the weights.

Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a file from
an untrusted source cannot execute code. Anything that is not a seq2attn checkpoint is refused.
Checkpoints of one run can be averaged into one (:func:`average_checkpoints`); checkpoints that
share the tokenizers can be decoded together as an ensemble (:func:`load_checkpoints`).
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections.abc import Sequence
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
from seq2attn.ensemble import Ensemble
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
    """A model ready to translate, with the tokenizers and config it was trained with.

    For an ensemble, ``model`` is an :class:`Ensemble`, ``members`` lists its checkpoints and
    ``path`` and ``config`` are the first member's.
    """

    path: Path
    config: dict[str, Any]
    model: Seq2Seq | Ensemble
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    members: tuple[Path, ...] = ()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (else its ``last.ckpt``).

    Of several ``best-*.ckpt`` (training keeps the top k) the one with the highest monitored
    score wins.
    """
    path = Path(path)
    if path.is_file():
        return path
    folder = _checkpoint_folder(path)
    best = ranked_checkpoints(folder)
    if best:
        return best[0]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    searched = [str(path), str(folder / "best-*.ckpt"), str(folder / "last.ckpt")]
    raise CheckpointError(f"no checkpoint found; searched: {', '.join(searched)}")


def _checkpoint_folder(path: Path) -> Path:
    """A run folder's ``checkpoints/``, or the folder itself."""
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def ranked_checkpoints(folder: Path) -> list[Path]:
    """The folder's ``best-*.ckpt`` files, highest monitored score (val BLEU) first.

    The score is the one the checkpoint callback recorded when it wrote the file; files without
    one come last, in name order.
    """
    files = sorted(folder.glob("best-*.ckpt"))
    return sorted(files, key=lambda f: -_monitored_score(f))


def _monitored_score(path: Path) -> float:
    """The score the top-k checkpoint callback saved the file for; -inf when it has none."""
    try:
        # memory-mapped: only the small callback states are read, not the weights
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        return -math.inf
    for state in contents.get("callbacks", {}).values():
        if isinstance(state, dict) and "best_k_models" in state:
            score = state.get("current_score")
            return -math.inf if score is None else float(score)
    return -math.inf


def checkpoints_to_average(paths: Sequence[Path], best: int | None = None) -> list[Path]:
    """Checkpoint files as given; a run folder (or its ``checkpoints/``) stands for its
    ``best-*.ckpt`` files, only the ``best`` highest-scoring ones when set."""
    if best is not None and best < 1:
        raise CheckpointError(f"--best {best}: must be at least 1")
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
            continue
        folder = _checkpoint_folder(path)
        ranked = ranked_checkpoints(folder)
        if not ranked:
            raise CheckpointError(f"{path}: no best-*.ckpt files in {folder}")
        files += ranked[:best]
    return files


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
    src, tgt = Tokenizer.from_proto(meta["src_spm"]), Tokenizer.from_proto(meta["tgt_spm"])
    model = _rebuild_model(resolved, contents, src, tgt)
    return LoadedCheckpoint(resolved, meta["config"], model, src, tgt)


def load_checkpoints(paths: str | Path | Sequence[str | Path]) -> LoadedCheckpoint:
    """One checkpoint (a path), or several (a list of paths) decoded as one :class:`Ensemble`.

    Ensemble members may differ in architecture but must share the source and target
    tokenizers, since the ensemble mixes their next-token probabilities.
    """
    if isinstance(paths, str | Path):
        return load_checkpoint(paths)
    if not paths:
        raise CheckpointError("ckpt_path=[]: give a checkpoint, or a list of several to ensemble")
    if len(paths) == 1:
        return load_checkpoint(paths[0])
    files = [resolve_checkpoint(path) for path in paths]
    contents = [read_checkpoint(path) for path in files]
    first = contents[0]["seq2attn"]
    for path, other in zip(files[1:], contents[1:], strict=True):
        meta = other["seq2attn"]
        if (meta["src_spm"], meta["tgt_spm"]) != (first["src_spm"], first["tgt_spm"]):
            raise CheckpointError(
                f"{path}: its tokenizers differ from {files[0]}'s; the members of an ensemble "
                "must share them"
            )
    src, tgt = Tokenizer.from_proto(first["src_spm"]), Tokenizer.from_proto(first["tgt_spm"])
    models = [
        _rebuild_model(path, checkpoint, src, tgt)
        for path, checkpoint in zip(files, contents, strict=True)
    ]
    return LoadedCheckpoint(
        path=files[0],
        config=first["config"],
        model=Ensemble(models).eval(),
        src_tokenizer=src,
        tgt_tokenizer=tgt,
        members=tuple(files),
    )


def _rebuild_model(path: Path, contents: dict[str, Any], src: Tokenizer, tgt: Tokenizer) -> Seq2Seq:
    """The model of a read checkpoint (with its tokenizers), with its weights, in eval mode."""
    model = instantiate(
        OmegaConf.create(contents["seq2attn"]["config"]["model"]),
        src_vocab_size=src.vocab_size,
        tgt_vocab_size=tgt.vocab_size,
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
            f"{path}: weights do not fit the stored model config: {error}"
        ) from error
    return model.eval()


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """A checkpoint whose weights are the element-wise mean of the given ones':
    θ = (1/n) Σ_i θ_i (checkpoint averaging, Junczys-Dowmunt et al. 2016; Vaswani et al. 2017).

    The checkpoints must come from one model: the same model config, tokenizers and weight names
    and shapes. The result keeps the first one's metadata (plus ``averaged_from``) and only the
    weights, so eval and translate load it; it cannot resume training (no optimizer state).
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    files = [resolve_checkpoint(p) for p in paths]
    first = read_checkpoint(files[0])
    meta = first["seq2attn"]
    totals = {key: value.double() for key, value in first["state_dict"].items()}
    for path in files[1:]:
        other = read_checkpoint(path)
        _check_same_model(files[0], meta, first["state_dict"], path, other)
        for key, value in other["state_dict"].items():
            if value.is_floating_point():
                totals[key] += value.double()
            elif not torch.equal(value, first["state_dict"][key]):
                raise CheckpointError(f"{path}: non-float weight {key} differs from {files[0]}'s")
    state = {
        key: (total / len(files)).to(first["state_dict"][key].dtype)
        if first["state_dict"][key].is_floating_point()
        else first["state_dict"][key]
        for key, total in totals.items()
    }
    return {"seq2attn": {**meta, "averaged_from": [str(f) for f in files]}, "state_dict": state}


def _check_same_model(
    first_path: Path,
    meta: dict[str, Any],
    weights: dict[str, Any],
    path: Path,
    other: dict[str, Any],
) -> None:
    other_meta = other["seq2attn"]
    differences = _differences(other_meta["config"].get("model"), meta["config"].get("model"))
    if differences:
        raise CheckpointError(
            f"{path}: its model config differs from {first_path}'s ({'; '.join(differences[:3])})"
        )
    if (other_meta["src_spm"], other_meta["tgt_spm"]) != (meta["src_spm"], meta["tgt_spm"]):
        raise CheckpointError(f"{path}: its tokenizers differ from {first_path}'s")
    shapes = {key: tuple(value.shape) for key, value in weights.items()}
    other_shapes = {key: tuple(value.shape) for key, value in other["state_dict"].items()}
    if other_shapes != shapes:
        differing = sorted(set(shapes.items()) ^ set(other_shapes.items()))[:3]
        raise CheckpointError(
            f"{path}: its weights differ in name or shape from {first_path}'s "
            f"(first differences: {differing})"
        )


class _Absent:
    """Stands for a config key one of two compared configs lacks."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _differences(here: Any, there: Any, key: str = "model") -> list[str]:
    """The dotted keys at which two stored configs differ, in key order, each as
    ``key: <value here> here, <value there> there`` (``<absent>`` for a missing key)."""
    if isinstance(here, dict) and isinstance(there, dict):
        return [
            difference
            for name in sorted(here.keys() | there.keys(), key=str)
            for difference in _differences(
                here.get(name, _ABSENT), there.get(name, _ABSENT), f"{key}.{name}"
            )
        ]
    return [] if here == there else [f"{key}: {here!r} here, {there!r} there"]


def save_checkpoint(contents: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically (a temporary file renamed into place)."""
    AtomicCheckpointIO().save_checkpoint(contents, path)
