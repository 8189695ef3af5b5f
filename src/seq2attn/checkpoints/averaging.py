"""Checkpoint averaging: θ = (1/n) Σ_i θ_i over checkpoints of one model
(Junczys-Dowmunt et al. 2016; Vaswani et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seq2attn.checkpoints import CheckpointError
from seq2attn.checkpoints.loading import Pick, read_checkpoint, resolve_checkpoints


def checkpoints_to_average(names: Sequence[str | Path], best: int | None = None) -> list[Path]:
    """Checkpoint files as given; a run folder (or its ``checkpoints/``) stands for its
    ``best-*.ckpt`` files, only the ``best`` highest-scoring ones when set."""
    if best is not None and best < 1:
        raise CheckpointError(f"--best {best}: must be at least 1")
    files: list[Path] = []
    for name in names:
        try:
            files += resolve_checkpoints(name, Pick.ranked)[:best]
        except CheckpointError:
            raise CheckpointError(f"{name}: no best-*.ckpt files in it") from None
    return files


def average_checkpoints(files: Sequence[Path]) -> dict[str, Any]:
    """A checkpoint whose weights are the element-wise mean of the given files'.

    The checkpoints must come from one model: the same model config, tokenizers and weight names
    and shapes. The result keeps the first one's metadata (plus ``averaged_from``) and only the
    weights, so eval and translate load it; it cannot resume training (no optimizer state).
    """
    if not files:
        raise CheckpointError("no checkpoints to average")
    first = read_checkpoint(files[0])
    meta = first["seq2attn"]
    totals = {key: value.double() for key, value in first["state_dict"].items()}
    for path in files[1:]:
        other = read_checkpoint(path)
        _check_same_model(files[0], first, path, other)
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
    first_path: Path, first: dict[str, Any], path: Path, other: dict[str, Any]
) -> None:
    meta, other_meta = first["seq2attn"], other["seq2attn"]
    differences = _differences(other_meta["config"].get("model"), meta["config"].get("model"))
    if differences:
        raise CheckpointError(
            f"{path}: its model config differs from {first_path}'s ({'; '.join(differences[:3])})"
        )
    if (other_meta["src_spm"], other_meta["tgt_spm"]) != (meta["src_spm"], meta["tgt_spm"]):
        raise CheckpointError(f"{path}: its tokenizers differ from {first_path}'s")
    shapes = {key: tuple(value.shape) for key, value in first["state_dict"].items()}
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
