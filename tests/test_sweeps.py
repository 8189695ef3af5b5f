"""W&B sweep files and the Hydra sweeper and launcher configs compose and validate."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.types import RunMode
from omegaconf import OmegaConf

from seq2attn.config import validate
from tests.conftest import Compose, compose_config

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
COMMAND_HEAD = ["${env}", "${interpreter}", "${program}"]


def test_there_are_sweeps() -> None:
    assert {"grid", "bayes"} <= {yaml.safe_load(p.read_text())["method"] for p in SWEEPS}


def candidates(spec: dict[str, Any]) -> list[Any]:
    """The values a sweep can give one parameter: its values, its value, or both range ends."""
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    return [spec["min"], spec["max"]]


def combinations(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the parameters' candidates; each seed once (seeds change no shapes)."""
    names = [name for name in parameters if name != "seed"]
    grids = [candidates(parameters[name]) for name in names]
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*grids)]
    seeds = candidates(parameters["seed"]) if "seed" in parameters else []
    return combos + [{**combos[0], "seed": seed} for seed in seeds]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_overrides_compose_and_validate(compose_train: Compose, path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "src/train.py"
    assert spec["metric"] == {"name": "val/bleu", "goal": "maximize"}
    command = spec["command"]
    assert command[:3] == COMMAND_HEAD and command[-1] == "${args_no_hyphens}"
    fixed = command[3:-1]
    for combination in combinations(spec["parameters"]):
        cfg = compose_train(*fixed, *(f"{k}={v}" for k, v in combination.items()))
        validate(cfg)
        for name, value in combination.items():
            if "." in name:  # a value, not a group choice
                assert OmegaConf.select(cfg, name) == value


def test_grid_covers_every_wiring() -> None:
    attention = set()
    for path in SWEEPS:
        spec = yaml.safe_load(path.read_text())
        if spec["method"] == "grid" and "attention" in spec["parameters"]:
            attention |= set(spec["parameters"]["attention"]["values"])
    assert attention == {"none", "bahdanau", "luong"}


def test_optuna_search_composes(tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [f"paths.output_dir={tmp_path}", "hparams_search=optuna", "hydra.sweeper.n_trials=4"],
    )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert (sweeper.direction, sweeper.n_trials, cfg.optimized_metric) == (
        "maximize",
        4,
        "val/bleu",
    )
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed
    assert set(sweeper.params) == {"optimizer.lr", "model.dropout", "model.hidden_size", "scorer"}
    assert cfg.hydra.mode == RunMode.MULTIRUN


@pytest.mark.parametrize(
    ("launcher", "target"),
    [("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")],
)
def test_launchers_compose(tmp_path: Path, launcher: str, target: str) -> None:
    cfg = compose_config(
        "train",
        [f"paths.output_dir={tmp_path}", f"hydra/launcher={launcher}", "hydra.sweep.dir=sweep"],
    )
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        slurm = cfg.hydra.launcher
        assert slurm.timeout_min > 0 and slurm.cpus_per_task > 0 and slurm.mem_gb > 0
        assert "partition" in slurm and slurm.submitit_folder == "sweep/.submitit/%j"
