"""Atomic checkpoint writes (a failed save leaves the previous checkpoint whole), ranking the
kept checkpoints, checkpoint averaging."""

from __future__ import annotations

import os
from io import BufferedWriter
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2attn.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    save_checkpoint,
)
from seq2attn.checkpoints.averaging import average_checkpoints, checkpoints_to_average
from seq2attn.checkpoints.loading import (
    Pick,
    ranked_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    resolve_checkpoints,
)
from seq2attn.checkpoints.saving import AtomicCheckpointIO


def test_failed_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    assert torch.load(path, weights_only=True)["step"].item() == 1

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # the process is stopped between writing and renaming

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left


def test_a_save_streams_into_the_file_and_a_load_maps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved_into, load_options = [], []
    save, load = torch.save, torch.load

    def recording_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        saved_into.append(f)
        save(obj, f, *args, **kwargs)

    def recording_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        load_options.append(kwargs)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    monkeypatch.setattr(torch, "load", recording_load)
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    weights = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    io.save_checkpoint(weights, path)
    assert len(saved_into) == 1 and isinstance(saved_into[0], BufferedWriter)  # not BytesIO
    loaded = io.load_checkpoint(path, weights_only=True)
    assert load_options == [{"map_location": None, "weights_only": True, "mmap": True}]
    torch.testing.assert_close(loaded["w"], weights["w"])
    assert loaded["step"] == 7
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        io.load_checkpoint(tmp_path / "missing.ckpt")


def _checkpoint(
    path: Path,
    weight: list[float],
    score: float | None = None,
    model: dict[str, Any] | None = None,
) -> Path:
    """A minimal seq2attn checkpoint file: metadata, two weights, a top-k callback state."""
    contents: dict[str, Any] = {
        "seq2attn": {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": {"model": model or {"hidden_size": 8, "encoder": {"cell": "gru"}}},
            "src_spm": b"src",
            "tgt_spm": b"tgt",
        },
        "state_dict": {
            "model.weight": torch.tensor(weight),
            "model.steps": torch.tensor([3]),
        },
    }
    if score is not None:
        contents["callbacks"] = {"ModelCheckpoint{}": {"best_k_models": {}, "current_score": score}}
    torch.save(contents, path)
    return path


def test_average_is_the_elementwise_mean_and_keeps_dtype_and_sources(tmp_path: Path) -> None:
    paths = [
        _checkpoint(tmp_path / "a.ckpt", [1.0, 2.0]),
        _checkpoint(tmp_path / "b.ckpt", [2.0, 4.0]),
        _checkpoint(tmp_path / "c.ckpt", [6.0, -3.0]),
    ]
    averaged = average_checkpoints(paths)
    weight = averaged["state_dict"]["model.weight"]
    assert weight.dtype == torch.float32 and weight.tolist() == [3.0, 1.0]
    assert averaged["state_dict"]["model.steps"].tolist() == [3]
    assert averaged["seq2attn"]["averaged_from"] == [str(p) for p in paths]
    assert averaged["seq2attn"]["format"] == CHECKPOINT_FORMAT
    save_checkpoint(averaged, tmp_path / "out" / "averaged.ckpt")
    reread = read_checkpoint(tmp_path / "out" / "averaged.ckpt")
    assert reread["state_dict"]["model.weight"].tolist() == [3.0, 1.0]


def test_average_refuses_checkpoints_of_another_model(tmp_path: Path) -> None:
    first = _checkpoint(tmp_path / "a.ckpt", [1.0, 2.0])
    other_config = _checkpoint(
        tmp_path / "b.ckpt", [1.0, 2.0], model={"hidden_size": 16, "encoder": {}, "dropout": 0.1}
    )
    with pytest.raises(CheckpointError) as refused:
        average_checkpoints([first, other_config])
    assert str(refused.value) == (
        f"{other_config}: its model config differs from {first}'s (model.dropout: 0.1 here, "
        "<absent> there; model.encoder.cell: <absent> here, 'gru' there; "
        "model.hidden_size: 16 here, 8 there)"
    )
    other_shape = _checkpoint(tmp_path / "c.ckpt", [1.0, 2.0, 3.0])
    with pytest.raises(CheckpointError, match=r"c\.ckpt: its weights differ in name or shape"):
        average_checkpoints([first, other_shape])
    with pytest.raises(CheckpointError, match="no checkpoints to average"):
        average_checkpoints([])


def test_best_checkpoints_rank_by_their_recorded_score_not_their_name(tmp_path: Path) -> None:
    # names sort by epoch; the scores say epoch 2 was best
    for epoch, score in [(1, 30.5), (2, 33.0), (3, 31.0)]:
        _checkpoint(tmp_path / f"best-epoch{epoch:03d}.ckpt", [0.0, 0.0], score)
    _checkpoint(tmp_path / "last.ckpt", [0.0, 0.0])
    ranked = [p.name for p in ranked_checkpoints(tmp_path)]
    assert ranked == ["best-epoch002.ckpt", "best-epoch003.ckpt", "best-epoch001.ckpt"]
    assert resolve_checkpoint(tmp_path).name == "best-epoch002.ckpt"
    assert checkpoints_to_average([tmp_path], best=2) == [
        tmp_path / "best-epoch002.ckpt",
        tmp_path / "best-epoch003.ckpt",
    ]
    with pytest.raises(CheckpointError, match="--best 0: must be at least 1"):
        checkpoints_to_average([tmp_path], best=0)
    with pytest.raises(CheckpointError, match=r"no best-\*\.ckpt files"):
        checkpoints_to_average([tmp_path / "empty"])


def test_one_resolver_serves_evaluate_resume_average_and_the_newest_run(tmp_path: Path) -> None:
    older, newer = tmp_path / "train" / "runs" / "a", tmp_path / "train" / "runs" / "b"
    for run, scores in [(older, [30.0]), (newer, [31.0, 35.0])]:
        (run / "checkpoints").mkdir(parents=True)
        for epoch, score in enumerate(scores):
            _checkpoint(run / "checkpoints" / f"best-epoch{epoch:03d}.ckpt", [0.0, 0.0], score)
        _checkpoint(run / "checkpoints" / "last.ckpt", [0.0, 0.0])
    os.utime(older / "checkpoints" / "last.ckpt", (1, 1))
    for path in (older / "checkpoints").glob("best-*"):
        os.utime(path, (1, 1))
    checkpoints = newer / "checkpoints"
    assert resolve_checkpoints(newer, Pick.best) == [checkpoints / "best-epoch001.ckpt"]
    assert resolve_checkpoints(newer, Pick.last) == [checkpoints / "last.ckpt"]
    assert resolve_checkpoints(checkpoints, Pick.ranked) == [
        checkpoints / "best-epoch001.ckpt",
        checkpoints / "best-epoch000.ckpt",
    ]
    file = older / "checkpoints" / "last.ckpt"
    assert all(resolve_checkpoints(file, pick) == [file] for pick in Pick)
    assert resolve_checkpoints("last", Pick.last, tmp_path) == [checkpoints / "last.ckpt"]
    with pytest.raises(CheckpointError, match=r"ckpt_path=last: no run folder with checkpoints"):
        resolve_checkpoints("last", Pick.last, tmp_path / "empty")
