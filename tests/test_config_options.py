"""Every option of every config group composes, validates and runs a fast dev run."""

from __future__ import annotations

import math

import pytest

from seq2attn.config import ConfigError
from seq2attn.tasks import train
from tests.conftest import CONF_DIR, Compose

# Groups whose options are exercised elsewhere: debug (below, not under fdr), cpu, hydra and paths
# (one default each, used by every run).
SKIPPED_GROUPS = {"cpu", "debug", "hydra", "paths"}
# The keys every data option extends; no corpus of its own (tests/test_config_validation.py).
BASES = {("data", "base")}
# Options that cannot run on a CPU-only machine; their start-up error is tested instead.
GPU_ONLY = {("precision", "16-mixed"), ("strategy", "fsdp"), ("strategy", "deepspeed")}
# Needs several machines (it would wait for the other nodes); tested in tests/test_platform.py.
MULTI_NODE = {("trainer", "multinode")}
# Data options that read files (or the network): their fast dev runs are in
# tests/test_multi30k.py (skipped without ../shared/data/multi30k) and
# tests/unit/test_datamodule.py (text_pairs and tsv on files written to tmp_path); hf's reader is
# tested with a stand-in `datasets` module in tests/unit/test_readers.py.
NEEDS_FILES = {("data", "multi30k"), ("data", "text_pairs"), ("data", "tsv"), ("data", "hf")}
# The speed benchmark's reference models (and their 20-minute recipes) read Multi30k and the
# shared SentencePiece model, the study and the best configuration read Multi30k:
# tests/test_multi30k.py composes and runs them.
NEEDS_FILES |= {
    ("experiment", f"{kind}_{model}") for kind in ("bench", "budget") for model in ("r1", "r2")
}
NEEDS_FILES |= {("experiment", "study"), ("experiment", "multi30k_best")}
# Options that need a setting the defaults leave open (a per-step schedule needs a step count).
NEEDS = {("scheduler", "warmup_cosine"): ["trainer.max_steps=400"]}


def _options() -> list[tuple[str, str]]:
    return sorted(
        (group.name, option.stem)
        for group in CONF_DIR.iterdir()
        if group.is_dir() and group.name not in SKIPPED_GROUPS
        for option in group.glob("*.yaml")
    )


OPTIONS = _options()


def test_every_group_of_the_interface_exists() -> None:
    groups = {group for group, _ in OPTIONS} | SKIPPED_GROUPS
    assert {
        "data", "model", "cell", "attention", "scorer", "teacher_forcing", "decoding", "trainer",
        "precision", "strategy", "logger", "callbacks", "paths", "experiment", "debug",
        "scheduler", "cpu",
    } <= groups  # fmt: skip
    assert {o for g, o in OPTIONS if g == "scorer"} == {
        "dot", "general", "concat", "additive", "mlp", "location", "scaled_dot", "scaled_general"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("group", "option"),
    [o for o in OPTIONS if o not in GPU_ONLY | NEEDS_FILES | MULTI_NODE | BASES],
)
def test_option_runs_a_fast_dev_run(compose_train: Compose, group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}", "debug=fdr", *NEEDS.get((group, option), []))
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["test/bleu"] <= 100.0


@pytest.mark.parametrize(("group", "option"), sorted(GPU_ONLY))
def test_gpu_only_option_stops_on_cpu(compose_train: Compose, group: str, option: str) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        train(compose_train(f"{group}={option}", "debug=fdr", "trainer.accelerator=cpu"))


@pytest.mark.parametrize("option", ["fdr", "limit", "overfit"])
def test_debug_option_runs(compose_train: Compose, option: str) -> None:
    cfg = compose_train(
        f"debug={option}", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
