"""W&B sweep files: their parameters are valid Hydra overrides and they optimise val/bleu."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from seq2attn.config import validate
from tests.conftest import Compose

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def test_there_are_sweeps() -> None:
    assert SWEEPS


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_overrides_compose_and_validate(compose_train: Compose, path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "src/train.py"
    assert spec["metric"] == {"name": "val/bleu", "goal": "maximize"}
    assert "${args_no_hyphens}" in spec["command"]
    names = list(spec["parameters"])
    grids = [spec["parameters"][name]["values"] for name in names]
    for values in itertools.product(*grids):
        validate(compose_train(*(f"{k}={v}" for k, v in zip(names, values, strict=True))))
