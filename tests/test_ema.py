"""The moving average of the weights (``ema.*``): θ̄ follows its equation step by step,
validation and checkpoints use it while training goes on with θ, and a resume continues both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from seq2attn.callbacks import ResumeCheckpoint
from seq2attn.checkpoints import CheckpointError
from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.ema import WeightEMA, check_resumable_average
from seq2attn.module import build_module
from seq2attn.tasks import train
from tests.conftest import TINY, Compose, compose_config, refusal_line, run_refused

Weights = list[torch.Tensor]


class Recorder(Callback):
    """θ after every optimizer step, what validation sees, and θ when each batch starts."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.after_step: list[Weights] = []
        self.validated: dict[int, Weights] = {}
        self.at_batch_start: dict[int, Weights] = {}

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> Weights:
        return [p.detach().clone() for p in pl_module.model.parameters()]  # type: ignore[union-attr]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any
    ) -> None:
        self.at_batch_start[trainer.global_step] = self._weights(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self.after_step.append(self._weights(pl_module))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated[trainer.global_step] = self._weights(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.checkpoint)  # as ResumeCheckpoint writes the last state


def _expected(initial: Weights, steps: list[Weights], decay: float, start_step: int) -> Weights:
    average = [w.clone() for w in initial]
    for step, weights in enumerate(steps, start=1):
        if step <= start_step:
            average = [w.clone() for w in weights]
        else:
            average = [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
    return average


def _assert_equal(got: Weights, expected: Weights) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("decay", "start_step", "tied"), [(0.5, 0, False), (0.7, 2, True)], ids=["untied", "tied"]
)
def test_the_average_follows_its_equation_and_is_what_validation_and_checkpoints_see(
    compose_train: Compose, tmp_path: Path, decay: float, start_step: int, tied: bool
) -> None:
    """Three steps, a validation after the second: validation sees θ̄₂, the third step starts
    from θ₂, the run ends showing θ̄₃, and a checkpoint holds θ̄₃ as its weights and θ₃ for a
    resume (under every name of a tied weight)."""
    cfg = compose_train(f"model.tie_embeddings={str(tied).lower()}")
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    initial = [p.detach().clone() for p in module.model.parameters()]
    recorder = Recorder(tmp_path / "end.ckpt")
    trainer = L.Trainer(
        max_steps=3, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        callbacks=[WeightEMA(decay, start_step), recorder], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)

    steps = recorder.after_step
    assert len(steps) == 3 and not torch.equal(steps[1][0], steps[2][0])
    _assert_equal(recorder.validated[2], _expected(initial, steps[:2], decay, start_step))
    _assert_equal(recorder.at_batch_start[2], steps[1])  # training went on from θ₂, not θ̄₂
    average = _expected(initial, steps, decay, start_step)
    _assert_equal([p.detach() for p in module.model.parameters()], average)

    saved = torch.load(tmp_path / "end.ckpt", weights_only=True)
    names = dict(module.model.named_parameters(remove_duplicate=False))
    by_id = {id(p): i for i, p in enumerate(module.model.parameters())}
    if tied:  # some weight has two names: both are written, as one tensor in the file
        groups: dict[int, list[str]] = {}
        for name, parameter in names.items():
            groups.setdefault(id(parameter), []).append(f"model.{name}")
        first, second = next(g for g in groups.values() if len(g) > 1)[:2]
        for part in (saved["state_dict"], saved["ema"]["training_weights"]):
            assert part[first].data_ptr() == part[second].data_ptr()
    for name, parameter in names.items():
        index = by_id[id(parameter)]
        torch.testing.assert_close(saved["state_dict"][f"model.{name}"], average[index])
        torch.testing.assert_close(
            saved["ema"]["training_weights"][f"model.{name}"], steps[2][index]
        )
    assert saved["ema"]["updates"] == 3 - start_step and saved["ema"]["decay"] == decay


def _run(root: Path, cache_dir: Path, name: str, *overrides: str) -> Path:
    output_dir = root / name
    cfg = compose_config(
        "train",
        [
            f"paths.output_dir={output_dir}", f"paths.cache_dir={cache_dir}", *TINY,
            "trainer.max_epochs=-1", "trainer.val_check_interval=3",
            "callbacks.early_stopping=null", "ema.decay=0.8", *overrides,
        ],
    )  # fmt: skip
    train(cfg)
    return output_dir


def _last(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("batches_a_step", [1, 2])
def test_a_run_resumed_from_a_periodic_save_ends_with_the_uninterrupted_average_and_weights(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, batches_a_step: int
) -> None:
    """The periodic save after step 2 holds that step's θ̄ and θ (the run is cut off after step
    3 without a closing save, as a killed process leaves it), and the resumed run folds in each
    later step once, also when a step takes two batches (gradient accumulation)."""
    accumulate = f"+trainer.accumulate_grad_batches={batches_a_step}"
    straight = _run(tmp_path, cache_dir, "straight", "trainer.max_steps=6", accumulate)
    with monkeypatch.context() as patched:
        patched.setattr(ResumeCheckpoint, "on_train_end", lambda *_: None)
        stopped = _run(
            tmp_path, cache_dir, "stopped", "trainer.max_steps=3", accumulate,
            "callbacks.resume_checkpoint.every_n_train_steps=2",
            "trainer.check_val_every_n_epoch=100", "callbacks.model_checkpoint.save_last=false",
        )  # fmt: skip
    halfway = _last(stopped)
    assert halfway["global_step"] == 2 and halfway["ema"]["updates"] == 2
    assert not torch.equal(  # θ̄ and θ differ: a resume needs both
        next(iter(halfway["state_dict"].values())),
        next(iter(halfway["ema"]["training_weights"].values())),
    )
    _run(tmp_path, cache_dir, "stopped", f"ckpt_path={stopped}", "trainer.max_steps=6", accumulate)
    expected, got = _last(straight), _last(stopped)
    assert got["global_step"] == 6 and got["ema"]["updates"] == expected["ema"]["updates"] == 6
    for part in ("state_dict", "training_weights"):
        want = expected[part] if part == "state_dict" else expected["ema"][part]
        have = got[part] if part == "state_dict" else got["ema"][part]
        assert want.keys() == have.keys()
        for name, tensor in want.items():
            assert torch.equal(have[name], tensor), (part, name)
    # the best checkpoint, which the closing test restored, holds θ̄ as its weights
    metrics = json.loads((stopped / "metrics.json").read_text())
    best = torch.load(stopped / metrics["best_checkpoint"], weights_only=True)
    weights = best["ema"]["training_weights"]
    assert any(not torch.equal(best["state_dict"][name], w) for name, w in weights.items())


def test_a_resume_cannot_switch_the_average_on_or_off(
    compose_train: Compose, tmp_path: Path, cache_dir: Path
) -> None:
    averaged = _run(tmp_path, cache_dir, "averaged", "trainer.max_steps=2")
    plain = _run(tmp_path, cache_dir, "plain", "trainer.max_steps=2", "ema.decay=null")
    off = validate(compose_train("ema.decay=null")).ema
    on = validate(compose_train("ema.decay=0.99")).ema
    last = averaged / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"resume with ema.decay=0.8, or start a new run"):
        check_resumable_average(last, off)
    with pytest.raises(
        CheckpointError, match=r"trained without a moving average .* ema.decay=0.99"
    ):
        check_resumable_average(plain / "checkpoints" / "last.ckpt", on)
    check_resumable_average(last, on)  # another decay goes on from the same θ and θ̄

    result = run_refused(
        "train.py", f"ckpt_path={last}", "ema.decay=null", f"paths.cache_dir={cache_dir}",
        run_dir=tmp_path / "refused",
    )  # fmt: skip
    assert "resume with ema.decay=0.8" in refusal_line(result)
    assert _last(averaged)["global_step"] == 2  # the refused resume wrote nothing


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ema.decay=1.0", r"ema.decay=1.0: must lie in \(0, 1\), or null \(off\)"),
        ("ema.decay=0", r"ema.decay=0.0: must lie in \(0, 1\)"),
        ("ema.start_step=-1", r"ema.start_step=-1: must be 0 or more"),
        (
            "strategy=fsdp trainer.accelerator=gpu ema.decay=0.99",
            r"ema.decay=0.99 with strategy=FSDPStrategy: .* use strategy=ddp, or ema.decay=null",
        ),
        (  # Lightning's registered name, not the config group
            "trainer.strategy=fsdp trainer.accelerator=gpu ema.decay=0.99",
            r"ema.decay=0.99 with strategy=FSDPStrategy",
        ),
        (
            "+callbacks.model_checkpoint.save_weights_only=true ema.decay=0.99",
            r"save_weights_only=true: weights-only checkpoints would hold the training weights",
        ),
    ],
)
def test_settings_outside_the_allowed_range_are_refused(
    compose_train: Compose, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*override.split()))
