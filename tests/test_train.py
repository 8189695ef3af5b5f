"""Training: every wiring x cell learns, a small model over-fits, a run leaves its outputs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch._dynamo.utils import counters

from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.data.dataset import Batch
from seq2attn.loss import token_nll
from seq2attn.module import build_module
from seq2attn.tasks import checkpoint_to_restore, train
from tests.conftest import Compose

WIRINGS = ["none", "bahdanau", "luong"]
CELLS = ["rnn", "gru", "lstm"]


def _first_batch(datamodule: TranslationDataModule) -> Batch:
    return next(iter(datamodule.train_dataloader()))


def _setup(compose_train: Compose, *overrides: str) -> tuple[torch.nn.Module, Batch]:
    cfg = compose_train(*overrides)
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    return module, _first_batch(datamodule)


def _loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    output = model(batch.src, batch.src_lengths, batch.tgt_in)
    return token_nll(output.logits, batch.tgt_out) / batch.num_target_tokens


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("wiring", WIRINGS)
def test_one_step_reaches_every_part(compose_train: Compose, wiring: str, cell: str) -> None:
    module, batch = _setup(compose_train, f"attention={wiring}", f"cell={cell}")
    model = module.model
    loss = _loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    parts = ["encoder", "decoder"] + (["scorer"] if wiring != "none" else [])
    for part in parts:
        grads = [p.grad for name, p in model.named_parameters() if part in name]
        assert grads, f"no parameters named *{part}*"
        assert all(g is not None for g in grads), f"{part}: parameter without gradient"
        assert sum(g.abs().sum().item() for g in grads) > 0, f"{part}: all-zero gradients"


def test_share_embeddings_uses_one_matrix_for_both_sides(compose_train: Compose) -> None:
    module, batch = _setup(compose_train, "model.share_embeddings=true")
    model = module.model
    assert model.src_embedding is model.tgt_embedding
    _loss(model, batch).backward()
    shared = model.src_embedding.weight.grad
    pad = {model.src_embedding.padding_idx}
    source, target = (set(side.unique().tolist()) - pad for side in (batch.src, batch.tgt_in))
    # the one table learns from both sides: pieces seen on one side only get gradients too
    for only in (source - target, target - source):
        assert only, "the batch should have pieces on one side only"
        assert shared[sorted(only)].abs().sum(dim=1).gt(0).all()
    untied = sum(p.numel() for p in _setup(compose_train)[0].model.parameters())
    assert untied - sum(p.numel() for p in model.parameters()) == shared.numel()


def test_share_embeddings_needs_one_vocabulary(compose_train: Compose) -> None:
    with pytest.raises(ConfigError, match="model.share_embeddings=true needs one vocabulary"):
        _setup(compose_train, "model.share_embeddings=true", "data.joint_vocab=false")


def test_small_model_overfits_one_batch(compose_train: Compose) -> None:
    torch.manual_seed(0)
    module, batch = _setup(
        compose_train, "model.dropout=0", "model.hidden_size=64", "model.embedding_size=32"
    )
    model = module.model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = _loss(model, batch).item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = _loss(model, batch)
        loss.backward()
        optimizer.step()
    assert first > 3.0
    assert loss.item() < 0.05, f"loss {loss.item():.3f} after 150 steps (start {first:.2f})"


def test_training_run_leaves_its_outputs(compose_train: Compose) -> None:
    cfg = compose_train("debug=limit", "attention=bahdanau", "trainer.limit_test_batches=1.0")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert math.isfinite(metrics["val/bleu"]) and math.isfinite(metrics["test/bleu"])
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/bleu"] == pytest.approx(metrics["test/bleu"])
    assert {"test/chrf", "test/ter", "train/loss", "train/tf_ratio"} <= saved.keys()
    assert (out / "config.yaml").read_text().count("attention: bahdanau") == 1
    assert len((out / "test_hypotheses.txt").read_text().splitlines()) == 40
    assert (out / "samples.txt").read_text().startswith("SRC: ")
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoints = {p.name for p in (out / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("best-") for name in checkpoints)
    stored = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert stored["seq2attn"]["config"]["model"]["attention"] == "bahdanau"
    assert isinstance(stored["seq2attn"]["tgt_spm"], bytes)


class StateAtTest(L.Callback):
    """Records, when the closing test starts, the training state still held, the checkpoint
    Lightning restored, and whether the weights are the best checkpoint's."""

    seen: list[dict[str, Any]] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
        weights = pl_module.state_dict()
        same = all(torch.equal(weights[k], v) for k, v in best["state_dict"].items())
        self.seen.append(
            {
                "moments": sum(len(optimizer.state) for optimizer in trainer.optimizers),
                "grads": sum(p.grad is not None for p in pl_module.parameters()),
                "restored": trainer.ckpt_path,
                "best_step": best["global_step"],
                "best_weights": same,
            }
        )


@pytest.mark.parametrize("epochs", [1, 2])
def test_the_closing_test_runs_on_the_best_weights_without_training_state(
    compose_train: Compose, epochs: int
) -> None:
    StateAtTest.seen.clear()
    probe = "+callbacks.state._target_=tests.test_train.StateAtTest"
    cfg = compose_train("debug=limit", f"trainer.max_epochs={epochs}", probe)
    metrics = train(cfg)
    (seen,) = StateAtTest.seen
    assert (seen["moments"], seen["grads"]) == (0, 0)
    assert seen["best_weights"]
    # restored only when the best validation was not the last step's, whose weights are in memory
    last_step_was_best = seen["best_step"] == metrics["trainer/global_step"]
    assert (seen["restored"] is None) == last_step_was_best
    if epochs == 1:  # one validation: the best
        assert last_step_was_best
    # what was freed had been saved for a resume: Adam's moments for every parameter
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    (optimizer,) = last["optimizer_states"]
    assert optimizer["state"] and all("exp_avg" in s for s in optimizer["state"].values())


def test_the_closing_test_restores_a_best_checkpoint_from_an_earlier_step(tmp_path: Path) -> None:
    saved = tmp_path / "best.ckpt"
    torch.save({"global_step": 40, "state_dict": {}}, saved)
    assert checkpoint_to_restore(str(saved), 40) is None
    assert checkpoint_to_restore(str(saved), 55) == str(saved)
    assert checkpoint_to_restore("", 55) is None


def test_monitored_metric_is_one_key_everywhere(compose_train: Compose) -> None:
    cfg = compose_train()
    assert cfg.callbacks.model_checkpoint.monitor == "val/bleu"
    assert cfg.callbacks.early_stopping.monitor == "val/bleu"
    assert cfg.optimized_metric == "val/bleu"


def test_free_running_loss_scores_the_decoder_fed_its_own_argmax(compose_train: Compose) -> None:
    """val/free_running_loss is the loss of the model fed its own argmax on the reference's
    positions; val/exposure_gap is how much more that is than the teacher-forced val/loss."""
    metrics = train(compose_train("debug=fdr", "free_running_loss=true"))
    for split in ("val", "test"):
        free, forced = metrics[f"{split}/free_running_loss"], metrics[f"{split}/loss"]
        assert math.isfinite(free) and free > 0
        assert metrics[f"{split}/exposure_gap"] == pytest.approx(free - forced, abs=1e-5)
    assert "val/free_running_loss" not in train(compose_train("debug=fdr"))


def test_compile_loop_trains_the_compiled_step_to_the_eager_losses(
    compose_train: Compose, caplog: pytest.LogCaptureFixture
) -> None:
    """compile_loop=true compiles Bahdanau's per-position step when fitting starts; one step of
    training, then validation and test, give the eager run's losses."""
    overrides = ("debug=fdr", "attention=bahdanau", "scorer=additive")
    counters.clear()
    eager = train(compose_train(*overrides))
    assert not counters["frames"]
    with caplog.at_level(logging.INFO, logger="seq2attn.module"):
        compiled = train(compose_train(*overrides, "compile_loop=true"))
    assert "the decoder's per-position function is compiled" in caplog.text
    assert counters["frames"]["ok"] > 0  # the training step ran the compiled function
    for key in ("train/loss", "val/loss", "test/loss"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key


def test_the_log_tells_each_validation_and_sums_up_the_run(
    compose_train: Compose, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seq2attn")
    cfg = compose_train(
        "trainer.max_steps=10",
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=5",
        "trainer.check_val_every_n_epoch=null",
        "trainer.log_every_n_steps=50",  # longer than the run: the last values still count
    )
    metrics = train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("seq2attn")]
    validations = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in validations] == ["5", "10"]
    assert "(new best)" in validations[0]
    for line in validations:
        assert all(word in line for word in ("train loss", "val loss", "ppl", "BLEU", "tok/s"))
    (summary,) = [line for line in lines if line.startswith("run summary")]
    assert metrics["stop_reason"] == "trainer.max_steps=10 reached"
    assert metrics["val/bleu_best_step"] in (5, 10)
    best = f"best val BLEU:  {metrics['val/bleu_best']:.2f} at step {metrics['val/bleu_best_step']}"
    assert best in summary and metrics["stop_reason"] in summary
    assert f"BLEU {metrics['test/bleu']:.2f}, chrF {metrics['test/chrf']:.2f}" in summary
    assert f"tested:         {metrics['best_checkpoint']}" in summary
    assert "python src/eval.py ckpt_path=" in summary
    assert math.isfinite(metrics["train/loss"]) and metrics["train/lr"] > 0
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["stop_reason"] == metrics["stop_reason"]
    # the attention page of the fixed validation sentences, as the model was at the last step
    page = (Path(cfg.paths.output_dir) / "attention.html").read_text()
    assert "<h1>seq2attn attention at step 10</h1>" in page
    assert page.count("<section") == 4 and page.count("<b>reference</b>") == 4
    # curves.png: four panels of 12 x 3.2 inches at 80 dpi, not blank
    with Image.open(Path(cfg.paths.output_dir) / "curves.png") as image:
        assert image.size == (960, 256)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01


def test_a_fast_dev_run_writes_nothing_and_tests_one_batch(
    compose_train: Compose, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seq2attn.tasks")
    cfg = compose_train("debug=fdr")
    out = Path(cfg.paths.output_dir)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/bleu"] <= 100
    assert not out.exists() or not any(out.iterdir())  # no record, checkpoint or outputs
    assert any(m.startswith("fast dev run: one batch of each split ran") for m in caplog.messages)


def test_subword_sampling_is_set_from_the_command_line(compose_train: Compose, caplog) -> None:
    run = validate(compose_train("data.subword_alpha=0.3", "data.subword_nbest=8"))
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    assert (datamodule.sampling.alpha, datamodule.sampling.nbest) == (0.3, 8)
    batch = _first_batch(datamodule)
    texts = datamodule.sources("train")
    decoded = [
        datamodule.src_tokenizer.decode([row[:n].tolist()])[0]
        for row, n in zip(batch.src, batch.src_lengths, strict=True)
    ]
    assert decoded == [texts[i] for i in batch.indices.tolist()]
    best = datamodule.src_tokenizer.encode([texts[i] for i in batch.indices.tolist()])
    drawn = [row[:n].tolist() for row, n in zip(batch.src, batch.src_lengths, strict=True)]
    # without sampling every row is the best segmentation; at alpha 0.3 about half are not (how
    # many depends on the tokenizer this machine trained)
    assert sum(d != b for d, b in zip(drawn, best, strict=True)) >= len(best) // 4
    caplog.set_level(logging.INFO)
    metrics = train(compose_train("debug=limit", "data.subword_alpha=0.3"))
    assert "subword sampling of the training pairs: alpha 0.3, nbest -1" in caplog.text
    assert math.isfinite(metrics["train/loss"])
