"""Warm start (``init_from``): a run that begins from a trained checkpoint's weights and
tokenizers, with its own optimizer, schedule and step count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seq2attn.checkpoints.loading import load_checkpoints, read_checkpoint, resolve_checkpoint
from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.module import build_module
from seq2attn.tasks import train
from seq2attn.warm_start import given_tokenizers, load_warm_start
from tests.conftest import Compose
from tests.test_config_validation import run_refused

# the trained_run fixture's network
SAME_MODEL = ("model.hidden_size=64", "model.embedding_size=32")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return {
        key.removeprefix("model."): value
        for key, value in read_checkpoint(checkpoint)["state_dict"].items()
        if key.startswith("model.")
    }


def test_the_model_starts_as_the_checkpoint_and_translates_as_it_does(
    compose_train: Compose, trained_run: Path
) -> None:
    cfg = compose_train(f"init_from={trained_run}", *SAME_MODEL)
    run = validate(cfg)
    start = load_warm_start(run.init_from, run.model.share_embeddings)
    assert start is not None
    datamodule = build_datamodule(run.data, given_tokenizers(start))
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    start.apply(module.model, dict(cfg.model))
    source = load_checkpoints([resolve_checkpoint(trained_run)]).model
    for key, value in source.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value), key
    assert any(not torch.equal(before[k], v) for k, v in source.state_dict().items())
    batch = next(iter(datamodule.val_dataloader()))
    module.model.eval()
    with torch.no_grad():
        mine = module.model(batch.src, batch.src_lengths, batch.tgt_in).logits
        theirs = source(batch.src, batch.src_lengths, batch.tgt_in).logits
    torch.testing.assert_close(mine, theirs)


def test_a_warm_started_run_trains_on_from_the_checkpoint_with_a_fresh_step_count(
    compose_train: Compose, trained_run: Path
) -> None:
    """Two steps from the checkpoint end near it (a random start would be far), on its
    tokenizers (not the 150 pieces the data settings ask for), at step 2 of this run."""
    start_file = resolve_checkpoint(trained_run)
    cfg = compose_train(
        f"init_from={trained_run}", *SAME_MODEL, "trainer.max_steps=2", "data.vocab_size=150"
    )
    train(cfg)
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    after, initial = _weights(last), _weights(start_file)
    moved = max((after[k] - initial[k]).abs().max().item() for k in initial)
    assert 0 < moved < 0.05  # Adam at lr 2e-3 (plus warm-up) moves a weight by under 0.01 a step
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 2
    meta, source = read_checkpoint(last)["seq2attn"], read_checkpoint(start_file)["seq2attn"]
    assert (meta["src_spm"], meta["tgt_spm"]) == (source["src_spm"], source["tgt_spm"])
    assert meta["config"]["init_from"] == str(trained_run)


def test_another_network_is_refused_naming_the_parameter_and_the_options(
    compose_train: Compose, trained_run: Path
) -> None:
    cfg = compose_train(f"init_from={trained_run}")  # hidden 32 and embeddings 16, not 64 and 32
    run = validate(cfg)
    start = load_warm_start(run.init_from, run.model.share_embeddings)
    assert start is not None
    datamodule = build_datamodule(run.data, start.tokenizers)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    with pytest.raises(ConfigError) as refused:
        start.apply(module.model, dict(cfg.model))
    message = str(refused.value)
    assert "its network differs from this run's" in message
    assert "model.hidden_size=64->32" in message and "model.embedding_size=32->16" in message
    assert "there and" in message  # a parameter named with both shapes


def test_a_refused_warm_start_exits_2_in_one_line_and_leaves_no_run_folder(
    trained_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "refused"
    result = run_refused(
        "train.py", f"init_from={trained_run}", "model.hidden_size=48",
        "data.corpus.num_train=200", f"paths.cache_dir={tmp_path / 'cache'}", run_dir=run_dir,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.hidden_size=64->48" in errors[0]
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_init_from_with_a_sentencepiece_model_is_refused(compose_train: Compose) -> None:
    with pytest.raises(ConfigError, match=r"data.spm_model=pieces.model with init_from"):
        validate(compose_train("init_from=some.ckpt", "data.spm_model=pieces.model"))


def test_a_teacher_and_a_warm_start_must_share_their_tokenizers(
    compose_train: Compose, trained_run: Path, tmp_path: Path
) -> None:
    start = load_warm_start(str(trained_run), share_embeddings=False)
    assert start is not None
    assert given_tokenizers(None, start) == start.tokenizers
    assert given_tokenizers(start, start) == start.tokenizers
    other_cfg = compose_train("trainer.max_steps=1", "data.vocab_size=150")
    train(other_cfg)
    other = load_warm_start(str(Path(other_cfg.paths.output_dir)), share_embeddings=False)
    with pytest.raises(ConfigError, match="trained on different tokenizers"):
        given_tokenizers(start, other)
    assert given_tokenizers(None, None) is None


def test_a_warm_started_run_resumes_without_its_starting_checkpoint(
    compose_train: Compose, trained_run: Path, tmp_path: Path
) -> None:
    """The resume reads its own checkpoint (weights and tokenizers), not ``init_from`` again,
    which may be gone by then."""
    copy = tmp_path / "start.ckpt"
    shutil.copyfile(resolve_checkpoint(trained_run), copy)
    overrides = (f"init_from={copy}", *SAME_MODEL, "data.vocab_size=150")
    first = compose_train(*overrides, "trainer.max_steps=2")
    train(first)
    output_dir = Path(first.paths.output_dir)
    stopped = _weights(output_dir / "checkpoints" / "last.ckpt")
    copy.unlink()
    train(compose_train(*overrides, "trainer.max_steps=4", f"ckpt_path={output_dir}"))
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4
    resumed = _weights(output_dir / "checkpoints" / "last.ckpt")
    moved = max((resumed[k] - stopped[k]).abs().max().item() for k in stopped)
    assert 0 < moved < 0.05  # two more steps from where the first two stopped
