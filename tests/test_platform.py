"""Precision, loggers, reproducibility and fault handling of a training run."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from PIL import Image

from seq2attn import module as module_lib
from seq2attn.config import validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.faults import NonFiniteLoss
from seq2attn.module import build_module
from seq2attn.tasks import train
from tests.conftest import Compose


def test_bf16_mixed_runs_the_matrix_products_in_bf16(compose_train: Compose) -> None:
    cfg = compose_train("precision=bf16-mixed", "attention=bahdanau")
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    model = build_module(cfg, run, datamodule).model
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    batch = next(iter(datamodule.train_dataloader()))
    with trainer.precision_plugin.forward_context():
        output = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert output.logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_bf16_mixed_trains_an_epoch_with_finite_loss(compose_train: Compose) -> None:
    metrics = train(compose_train("precision=bf16-mixed", "trainer.max_epochs=1"))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])


def test_bf16_mixed_validates_and_tests_by_decoding_in_fp32(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    # autocast on?, the dtype of the first step's logits (or features, where the bf16 output
    # layer takes over from them: decoding.output_precision)
    searched: list[tuple[bool, torch.dtype]] = []
    search = module_lib.decode

    def recording_decode(model, *args, **kwargs):
        steps = {name: getattr(model, name) for name in ("step", "step_features")}

        def recording(name):
            def first_step(*step_args):
                out, *rest = steps[name](*step_args)
                searched.append((torch.is_autocast_enabled("cpu"), out.dtype))
                for kept, function in steps.items():
                    setattr(model, kept, function)
                return (out, *rest)

            return first_step

        for name in steps:
            setattr(model, name, recording(name))
        try:
            return search(model, *args, **kwargs)
        finally:
            for name in steps:
                model.__dict__.pop(name, None)

    monkeypatch.setattr(module_lib, "decode", recording_decode)
    train(compose_train("precision=bf16-mixed", "trainer.max_epochs=1"))
    assert searched and set(searched) == {(False, torch.float32)}  # val batches, then test


class _GradientsAtStep(Callback):
    """Whether the optimizer is fused, and the gradients each optimizer step applied (clipped)."""

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        self.fused = optimizer.param_groups[0]["fused"]
        self.grads: list[list[torch.Tensor]] = []
        optimizer.register_step_post_hook(
            lambda opt, args, kwargs: self.grads.append(
                [p.grad.clone() for group in opt.param_groups for p in group["params"]]
            )
        )


CLIP = 1e-4  # far below the raw gradients of the tiny model (largest ~0.1)


@pytest.mark.parametrize("algorithm", ["norm", "value", None])
def test_bf16_mixed_clips_the_gradients_of_a_fused_optimizer(
    compose_train: Compose, algorithm: str | None
) -> None:
    clipping = (
        [f"trainer.gradient_clip_val={CLIP}", f"+trainer.gradient_clip_algorithm={algorithm}"]
        if algorithm
        else ["trainer.gradient_clip_val=null"]
    )
    cfg = compose_train("precision=bf16-mixed", "optimizer.fused=true", *clipping)
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    recorder = _GradientsAtStep()
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[recorder], max_steps=3, limit_val_batches=0
    )
    trainer.fit(module, datamodule=datamodule)
    assert recorder.fused and len(recorder.grads) == 3
    for grads in recorder.grads:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        largest = max(g.abs().max() for g in grads)
        if algorithm == "norm":
            assert norm.item() == pytest.approx(CLIP, rel=1e-3)
        elif algorithm == "value":
            assert largest.item() == pytest.approx(CLIP)
        else:
            assert largest > 100 * CLIP


def test_same_seed_gives_identical_metrics(compose_train: Compose, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        cfg = compose_train("debug=limit", f"paths.output_dir={tmp_path / name}")
        runs.append(train(cfg))
    for key in ("train/loss", "val/loss", "val/bleu", "test/bleu", "test/loss"):
        assert runs[0][key] == runs[1][key], key


def _nan_for_first_calls(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the training loss NaN for the first ``calls`` batches."""
    real = module_lib.training_nll
    count = {"n": 0}

    def training_nll(model, output, targets: torch.Tensor, label_smoothing=0.0, soft=None):
        count["n"] += 1
        loss = real(model, output, targets, label_smoothing, soft)
        return loss * float("nan") if count["n"] <= calls else loss

    monkeypatch.setattr(module_lib, "training_nll", training_nll)


def test_nonfinite_loss_stops_naming_the_step(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_for_first_calls(monkeypatch, 1)
    with pytest.raises(NonFiniteLoss, match=r"non-finite training loss at step 0; "):
        train(compose_train("debug=limit"))


def test_nonfinite_loss_can_skip_batches(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _nan_for_first_calls(monkeypatch, 3)
    metrics = train(compose_train("debug=limit", "nonfinite_loss=skip"))
    assert caplog.text.count("no update from this batch (nonfinite_loss=skip)") == 3
    assert metrics["train/skipped_batches"] == 3
    assert math.isfinite(metrics["train/loss"])
    assert math.isfinite(metrics["val/loss"])


def written(run: Path, last: bytes, seconds: float = 30.0) -> bytes:
    """The offline run's transaction log once it holds ``last`` (or, after ``seconds``, what it
    holds): W&B's service process can create the file and write its records just after
    ``wandb.finish()`` returns."""
    deadline = time.monotonic() + seconds
    while True:
        log = next(run.glob("run-*.wandb"), None)
        record = log.read_bytes() if log else b""
        if last in record or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


def test_wandb_offline_run_keeps_config_history_and_heatmaps(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "debug=limit", "trainer.log_every_n_steps=2")
    train(cfg)
    printed = capfd.readouterr()
    assert "wandb" in printed.err + printed.out  # W&B spoke (offline run, sync hint) ...
    assert "anonymous setting" not in printed.err + printed.out  # ... but not of that
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    record = written(runs[0], b"test/bleu")  # logged after the config and the history
    assert b"input_feeding" in record and b"GeneralScorer" in record  # the composed config
    assert record.count(b"train/loss") >= 5  # one history row per logging step
    assert b"test/bleu" in record
    images = list((files / "media" / "images" / "val").glob("attention_*.png"))
    assert len(images) == 2 * 4  # 4 sentences at each of 2 validations
    sizes = set()
    for path in images:
        with Image.open(path) as image:
            sizes.add(image.size)
    assert len(sizes) == 1  # padded to one size: W&B shows a step's images side by side
    assert len(list((files / "media" / "table" / "val").glob("samples_*.table.json"))) == 2


def test_csv_logger_keeps_heatmaps_of_every_validation(compose_train: Compose) -> None:
    cfg = compose_train("debug=limit")
    train(cfg)
    maps = list((Path(cfg.paths.output_dir) / "csv" / "attention").glob("step*_sentence*.png"))
    assert len(maps) == 2 * 4


def test_multinode_config_uses_the_slurm_cluster_environment(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    slurm = {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_JOB_NAME": "seq2attn",
        "SLURM_JOB_ID": "1234",
        "SLURM_NODELIST": "node[1-2]",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    cfg = compose_train("trainer=multinode", "strategy=ddp")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
