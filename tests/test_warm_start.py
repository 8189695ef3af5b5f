"""Warm start (``init_from``): a run that begins from a trained checkpoint's weights and
tokenizers, with its own optimizer, schedule and step count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seq2attn import warm_start
from seq2attn.checkpoints import CheckpointError
from seq2attn.checkpoints.loading import load_checkpoints, read_checkpoint, resolve_checkpoint
from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.module import build_module
from seq2attn.tasks import train
from seq2attn.warm_start import WarmStart, load_warm_start
from tests.conftest import Compose, loaded_as_english_to_german, refusal_line, run_refused

# the trained_run fixture's network
SAME_MODEL = ("model.hidden_size=64", "model.embedding_size=32")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return {
        key.removeprefix("model."): value
        for key, value in read_checkpoint(checkpoint)["state_dict"].items()
        if key.startswith("model.")
    }


def _largest_change(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> float:
    return max((after[k] - before[k]).abs().max().item() for k in before)


def _load(compose_train: Compose, *overrides: str) -> WarmStart | None:
    cfg = compose_train(*overrides)
    return load_warm_start(validate(cfg), dict(cfg.model))


def test_the_model_starts_as_the_checkpoint_and_translates_as_it_does(
    compose_train: Compose, trained_run: Path
) -> None:
    cfg = compose_train(f"init_from={trained_run}", *SAME_MODEL, "model.dropout=0.5")
    run = validate(cfg)
    start = load_warm_start(run, dict(cfg.model))
    assert start is not None
    datamodule = build_datamodule(run.data, start.tokenizers)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    start.load_into_(module.model)
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
    # Adam moves a weight by about the learning rate (2e-3) a step
    assert 0 < _largest_change(_weights(last), _weights(start_file)) < 0.05
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 2
    meta, source = read_checkpoint(last)["seq2attn"], read_checkpoint(start_file)["seq2attn"]
    assert (meta["src_spm"], meta["tgt_spm"]) == (source["src_spm"], source["tgt_spm"])
    assert meta["config"]["init_from"] == str(trained_run)


def test_another_network_is_refused_naming_the_weight_and_the_options(
    compose_train: Compose, trained_run: Path
) -> None:
    """Hidden 32 and embeddings 16 against the checkpoint's 64 and 32; dropout holds no weights
    and is not named."""
    with pytest.raises(ConfigError) as refused:
        _load(compose_train, f"init_from={trained_run}", "model.dropout=0.5")
    message = str(refused.value)
    assert "its network differs from this run's" in message
    assert "in the checkpoint and (" in message and ") in this run" in message  # both shapes
    assert "model.hidden_size=64->32" in message and "model.embedding_size=32->16" in message
    assert "dropout" not in message


def test_sharing_the_embeddings_the_checkpoint_kept_apart_is_refused(
    compose_train: Compose, trained_run: Path
) -> None:
    """Same names and shapes, but one table where the checkpoint has two: loading would write
    the target table over the source one."""
    with pytest.raises(ConfigError) as refused:
        _load(compose_train, f"init_from={trained_run}", *SAME_MODEL, "model.share_embeddings=true")
    message = str(refused.value)
    assert "shares its weights with no other in the checkpoint" in message
    assert "model.share_embeddings=False->True" in message


def test_a_checkpoint_of_another_direction_is_refused(
    compose_train: Compose, trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm_start, "load_checkpoints", loaded_as_english_to_german)
    cfg = compose_train(f"init_from={trained_run}", *SAME_MODEL)
    with pytest.raises(ConfigError, match=r"init_from=.* translates en->de, this run de->en"):
        load_warm_start(validate(cfg), dict(cfg.model), ("de", "en"))


def test_a_missing_checkpoint_is_named(compose_train: Compose, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="gone.ckpt"):
        _load(compose_train, f"init_from={tmp_path / 'gone.ckpt'}")


def test_a_refused_warm_start_exits_2_in_one_line_and_leaves_no_run_folder(
    trained_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "refused"
    result = run_refused(
        "train.py", f"init_from={trained_run}", "model.hidden_size=48",
        "data.corpus.num_train=200", f"paths.cache_dir={tmp_path / 'cache'}", run_dir=run_dir,
    )  # fmt: skip
    assert "model.hidden_size=64->48" in refusal_line(result)
    assert not run_dir.exists()


def test_init_from_with_a_sentencepiece_model_is_refused(compose_train: Compose) -> None:
    with pytest.raises(ConfigError, match=r"data.spm_model=pieces.model with init_from"):
        validate(compose_train("init_from=some.ckpt", "data.spm_model=pieces.model"))


def test_a_teacher_and_a_warm_start_train_together_only_on_shared_tokenizers(
    compose_train: Compose, trained_run: Path, tmp_path: Path
) -> None:
    """The documented use (a student that starts from its teacher and reads its distributions)
    trains; a warm start on other tokenizers than the teacher's is refused before any work."""
    both = compose_train(
        f"init_from={trained_run}",
        f"distillation.teacher={trained_run}",
        *SAME_MODEL,
        "trainer.max_steps=1",
    )
    train(both)
    student = read_checkpoint(Path(both.paths.output_dir) / "checkpoints" / "last.ckpt")
    teacher = read_checkpoint(resolve_checkpoint(trained_run))
    assert student["seq2attn"]["tgt_spm"] == teacher["seq2attn"]["tgt_spm"]

    other = compose_train(*SAME_MODEL, "trainer.max_steps=1", "data.vocab_size=150")
    other.paths.output_dir = str(tmp_path / "other")
    train(other)
    mixed = compose_train(
        f"init_from={tmp_path / 'other'}", f"distillation.teacher={trained_run}", *SAME_MODEL
    )
    mixed.paths.output_dir = str(tmp_path / "mixed")
    with pytest.raises(ConfigError, match="trained on different tokenizers"):
        train(mixed)
    assert not (tmp_path / "mixed" / "checkpoints").exists()


@pytest.mark.parametrize(
    "repeated", [True, False], ids=["init_from_repeated", "init_from_left_out"]
)
def test_a_warm_started_run_resumes_from_its_own_checkpoint(
    compose_train: Compose, trained_run: Path, tmp_path: Path, repeated: bool
) -> None:
    """The resume reads its own checkpoint (weights and tokenizers), whether or not the command
    repeats ``init_from``, whose file may be gone by then."""
    copy = tmp_path / "start.ckpt"
    shutil.copyfile(resolve_checkpoint(trained_run), copy)
    overrides = (*SAME_MODEL, "data.vocab_size=150")
    first = compose_train(f"init_from={copy}", *overrides, "trainer.max_steps=2")
    train(first)
    output_dir = Path(first.paths.output_dir)
    stopped = _weights(output_dir / "checkpoints" / "last.ckpt")
    copy.unlink()
    again = (f"init_from={copy}",) if repeated else ()
    train(compose_train(*again, *overrides, "trainer.max_steps=4", f"ckpt_path={output_dir}"))
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4
    resumed = _weights(output_dir / "checkpoints" / "last.ckpt")
    assert 0 < _largest_change(resumed, stopped) < 0.05  # two more steps from where it stopped
