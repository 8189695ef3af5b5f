"""Reading checkpoints: resolve what the user named, verify the format, rebuild the model.

Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only, so a file from
an untrusted source cannot execute code. Anything that is not a seq2attn checkpoint is refused.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from seq2attn.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MODEL_PREFIX,
    CheckpointError,
)
from seq2attn.checkpoints.trust import MODEL_BASES, check_targets
from seq2attn.config.model import ModelSchema, build_model, check_scorer
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.ensemble import Ensemble
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.schema import ConfigError, check

NEWEST_RUN = "last"


class Pick(str, Enum):
    """Which checkpoint(s) of a run folder a name stands for."""

    best = "best"  # the highest-scoring best-*.ckpt, else last.ckpt (evaluate, translate)
    last = "last"  # last.ckpt (resume)
    ranked = "ranked"  # every best-*.ckpt, highest score first (average)


def resolve_checkpoints(
    name: str | Path, pick: Pick = Pick.best, log_dir: Path | None = None
) -> list[Path]:
    """The checkpoint files that ``name`` stands for: a file is itself; a run folder (or its
    ``checkpoints/``) gives the files ``pick`` selects; ``last`` is the newest run folder under
    ``<log_dir>/train``."""
    if str(name) == NEWEST_RUN and log_dir is not None and not Path(name).exists():
        name = _newest_run(log_dir, "last.ckpt" if pick == Pick.last else "*.ckpt")
    path = Path(name)
    if path.is_file():
        return [path]
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    ranked = ranked_checkpoints(folder)
    last = folder / "last.ckpt"
    if pick == Pick.ranked and ranked:
        return ranked
    if pick == Pick.best and ranked:
        return ranked[:1]
    if pick != Pick.ranked and last.is_file():
        return [last]
    wanted = {Pick.best: ["best-*.ckpt", "last.ckpt"], Pick.last: ["last.ckpt"]}
    searched = [str(path)] + [str(folder / f) for f in wanted.get(pick, ["best-*.ckpt"])]
    raise CheckpointError(f"no checkpoint found; searched: {', '.join(searched)}")


def resolve_checkpoint(name: str | Path, log_dir: Path | None = None) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (else its ``last.ckpt``)."""
    return resolve_checkpoints(name, Pick.best, log_dir)[0]


def _newest_run(log_dir: Path, pattern: str) -> Path:
    """The run folder under ``<log_dir>/train`` whose checkpoint named ``pattern`` was written
    last."""
    files = list((log_dir / "train").glob(f"**/checkpoints/{pattern}"))
    if not files:
        raise CheckpointError(
            f"ckpt_path={NEWEST_RUN}: no run folder with checkpoints under {log_dir / 'train'}"
        )
    return max(files, key=lambda f: f.stat().st_mtime).parent.parent


def ranked_checkpoints(folder: Path) -> list[Path]:
    """The folder's ``best-*.ckpt`` files, highest monitored score (val BLEU) first.

    The score is the one the checkpoint callback recorded when it wrote the file; files without
    one come last, in name order.
    """
    files = sorted(folder.glob("best-*.ckpt"))
    return sorted(files, key=lambda f: -_monitored_score(f))


def mapped_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (weights-only), memory-mapped: reading its small entries (the
    step, the callbacks' states) does not read the weights or the optimizer's state."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _monitored_score(path: Path) -> float:
    """The score the top-k checkpoint callback saved the file for; -inf when it has none."""
    try:
        contents = mapped_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        return -math.inf
    for state in contents.get("callbacks", {}).values():
        if isinstance(state, dict) and "best_k_models" in state:
            score = state.get("current_score")
            return -math.inf if score is None else float(score)
    return -math.inf


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The contents (weights-only) of a checkpoint file, validated as a seq2attn checkpoint;
    ``mmap``: memory-mapped, so that reading its small entries does not read the tensors."""
    path = Path(path)
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused to load; it is not a file of tensors and plain containers (it is "
            "corrupted, or holds Python objects, which seq2attn never executes)"
        ) from None
    except Exception as error:  # any failure to parse untrusted bytes is the file's
        detail = (str(error).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is corrupted, truncated or not a "
            f"PyTorch file ({type(error).__name__}: {detail})"
        ) from None
    meta = contents.get("seq2attn") if isinstance(contents, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a seq2attn checkpoint (no 'seq2attn' metadata); only checkpoints "
            "written by src/train.py can be loaded"
        )
    version = meta.get("version")
    if isinstance(version, int) and version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer seq2attn (checkpoint format {version}; this one reads "
            f"format {CHECKPOINT_VERSION}): upgrade seq2attn to load it"
        )
    if version != CHECKPOINT_VERSION or "state_dict" not in contents:
        raise CheckpointError(
            f"{path}: seq2attn checkpoint format {version!r} (or one without weights) cannot be "
            f"read by this seq2attn, which reads format {CHECKPOINT_VERSION}; re-train, or load "
            "it with the seq2attn version that wrote it"
        )
    return contents


@dataclass
class LoadedCheckpoint:
    """A model in eval mode with the tokenizers and config it was trained with.

    For an ensemble, ``model`` is an :class:`Ensemble`, and ``config`` is the first member's.
    """

    paths: tuple[Path, ...]
    config: dict[str, Any]
    model: Seq2Seq | Ensemble
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer


def load_checkpoints(files: Sequence[Path]) -> LoadedCheckpoint:
    """One checkpoint file, or several decoded as one :class:`Ensemble`.

    Ensemble members may differ in architecture but must share the source and target
    tokenizers, since the ensemble mixes their next-token probabilities.
    """
    if not files:
        raise CheckpointError("ckpt_path=[]: give a checkpoint, or a list of several to ensemble")
    contents = [read_checkpoint(path) for path in files]
    first = contents[0]["seq2attn"]
    for path, other in zip(files[1:], contents[1:], strict=True):
        meta = other["seq2attn"]
        if (meta["src_spm"], meta["tgt_spm"]) != (first["src_spm"], first["tgt_spm"]):
            raise CheckpointError(
                f"{path}: its tokenizers differ from {files[0]}'s; the members of an ensemble "
                "must share them"
            )
    src, tgt = stored_tokenizers(files[0], contents[0])
    models = [
        rebuild_model(path, checkpoint, src, tgt)
        for path, checkpoint in zip(files, contents, strict=True)
    ]
    model = models[0] if len(models) == 1 else Ensemble(models).eval()
    return LoadedCheckpoint(tuple(files), first["config"], model, src, tgt)


def check_reusable(
    option: str,
    config: dict[str, Any],
    tokenizers: tuple[Tokenizer, Tokenizer],
    share_embeddings: bool,
    languages: tuple[str | None, str | None] = (None, None),
) -> None:
    """Refuse a checkpoint whose ``tokenizers`` a training run takes over (through ``option``: a
    distillation teacher, a warm start) when its stored ``config`` names other (source, target)
    ``languages`` (where both name theirs), or when its two tokenizers differ while the run shares
    one embedding table between them (``share_embeddings``)."""
    data = config.get("data") or {}
    theirs = (data.get("src_lang"), data.get("tgt_lang"))
    if None not in theirs and None not in languages and theirs != languages:
        raise ConfigError(
            f"{option} translates {theirs[0]}->{theirs[1]}, this run "
            f"{languages[0]}->{languages[1]}: give a checkpoint of this direction"
        )
    src, tgt = tokenizers
    if share_embeddings and src.proto != tgt.proto:
        raise ConfigError(
            f"model.share_embeddings=true with {option}: its source and target tokenizers "
            "differ, and this run trains on them; set model.share_embeddings=false"
        )


def stored_tokenizers(path: Path, contents: dict[str, Any]) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers kept in a read checkpoint's ``contents``."""
    meta = contents["seq2attn"]
    try:
        return Tokenizer.from_proto(meta["src_spm"]), Tokenizer.from_proto(meta["tgt_spm"])
    except Exception as error:  # any failure to parse untrusted bytes is the file's
        raise CheckpointError(
            f"{path}: its stored tokenizers cannot be read ({type(error).__name__})"
        ) from None


def rebuild_model(path: Path, contents: dict[str, Any], src: Tokenizer, tgt: Tokenizer) -> Seq2Seq:
    """The model of a read checkpoint (with its tokenizers), with its weights, in eval mode.

    Only the stored ``model`` node is built, and only after its targets passed
    :func:`~seq2attn.checkpoints.trust.check_targets` and its values the model schema.
    """
    node = contents["seq2attn"]["config"].get("model")
    check_targets(node, "model", MODEL_BASES, str(path))
    try:
        model = check(ModelSchema, node, "model")
        scorer = check_scorer(node.get("scorer"), model)
    except ConfigError as error:
        raise CheckpointError(
            f"{path}: its stored model config does not fit this seq2attn ({error})"
        ) from None
    network = build_model(model, scorer, src.vocab_size, tgt.vocab_size)
    weights = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in contents["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the stored model config: {error}"
        ) from error
    return network.eval()


def resume_checkpoint(name: str | Path | None, log_dir: Path) -> Path | None:
    """The ``last.ckpt`` (or file) a training run resumes from, or None to start afresh."""
    return None if name is None else resolve_checkpoints(name, Pick.last, log_dir)[0]


def run_folder_to_resume(name: str | None, log_dir: str | Path) -> Path | None:
    """The run folder whose ``last.ckpt`` (or checkpoint file) ``name`` stands for, in which a
    resumed training continues; None for a checkpoint outside a run folder, or when ``name``
    names nothing (the training task then says what is missing)."""
    if name is None:
        return None
    try:
        checkpoint = resolve_checkpoints(name, Pick.last, Path(log_dir))[0]
    except CheckpointError:
        return None
    folder = checkpoint.parent
    folder = folder.parent if folder.name == "checkpoints" else folder
    return folder if (folder / "config.yaml").is_file() else None


def check_resumable(path: Path, src: Tokenizer, tgt: Tokenizer) -> None:
    """Refuse to resume from a file that is not a seq2attn checkpoint (read weights-only) or
    whose tokenizers differ from the run's: the same shapes would train on with other pieces."""
    meta = read_checkpoint(path)["seq2attn"]
    for side, stored, current in (
        ("source", meta["src_spm"], src),
        ("target", meta["tgt_spm"], tgt),
    ):
        if stored != current.proto:
            pieces = Tokenizer.from_proto(stored).vocab_size
            raise CheckpointError(
                f"{path}: its {side} tokenizer ({pieces} pieces) differs from this run's "
                f"({current.vocab_size} pieces, from the data settings); resume with the data "
                "settings the checkpoint was trained with (its run folder's config.yaml)"
            )
