"""Hydra multiruns through ``src/train.py -m``: basic and joblib launchers, the Optuna sweeper, and
the report over their run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seq2attn.report import collect_runs, to_markdown, varying_keys
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
# one short epoch: 5 training batches, 2 validation and test batches
SHORT = ["debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=5"]
GRID = ["attention=luong,bahdanau", "cell=gru,lstm"]


def multirun(tmp_path: Path, cache_dir: Path, *overrides: str) -> Path:
    """Run ``src/train.py -m`` with tiny sizes; returns the sweep folder."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "src/train.py", "-m", *TINY, *SHORT, *overrides]
    command += [f"paths.root_dir={tmp_path}", f"paths.cache_dir={cache_dir}"]
    command += [f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def finished_folders(sweep_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in sweep_dir.glob("*/metrics.json"))


def test_grid_gives_one_folder_per_combination_and_a_report_row_each(
    tmp_path: Path, cache_dir: Path
) -> None:
    sweep_dir = multirun(tmp_path, cache_dir, *GRID)
    assert finished_folders(sweep_dir) == [
        "0_toy_luong-general-gru",
        "1_toy_luong-general-lstm",
        "2_toy_bahdanau-additive-gru",
        "3_toy_bahdanau-additive-lstm",
    ]
    runs, unfinished = collect_runs(sweep_dir)
    assert len(runs) == 4 and not unfinished
    assert set(varying_keys([r.config for r in runs])) == {
        "attention.type",
        "scorer._target_",
        "cell.type",
    }
    lines = to_markdown(runs).split("\n\n")[1].splitlines()
    header, _, *cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    rows = [dict(zip(header, row, strict=True)) for row in cells]
    assert [(r["attention"], r["scorer"], r["cell"]) for r in rows] == [
        ("luong", "general", "gru"),
        ("luong", "general", "lstm"),
        ("bahdanau", "additive", "gru"),
        ("bahdanau", "additive", "lstm"),
    ]
    for run in runs:
        assert run.metrics["params"] > 0 and run.metrics["time/wall_s"] > 0
        assert 0 <= run.metrics["val/bleu_best"] <= 100 and 0 <= run.metrics["test/bleu"] <= 100


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path, cache_dir: Path) -> None:
    sweep_dir = multirun(
        tmp_path, cache_dir, "cell=gru,lstm", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    assert finished_folders(sweep_dir) == ["0_toy_luong-general-gru", "1_toy_luong-general-lstm"]
    launcher = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 2


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_keeps_the_best(tmp_path: Path, cache_dir: Path) -> None:
    # TINY fixes model.hidden_size, which takes it out of the search space
    sweep_dir = multirun(tmp_path, cache_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=4")
    folders = finished_folders(sweep_dir)
    assert [name.split("_")[0] for name in folders] == ["0", "1", "2", "3"]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "model.dropout", "scorer"}
    assert 0.0003 <= results["best_params"]["optimizer.lr"] <= 0.01
    scores = [json.loads((sweep_dir / f / "metrics.json").read_text())["val/bleu"] for f in folders]
    assert results["best_value"] == pytest.approx(max(scores))
