"""experiments.study: which runs a call trains, and the multirun's experiment configs compose what
the single-run commands compose."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from experiments.study import (
    RESULTS,
    ROWS,
    STUDIES,
    TOY_ROWS,
    StudyRun,
    export_finished,
    interrupted,
    missing,
    selected,
    study_runs,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_every_run_once_seed_one_of_every_row_first() -> None:
    runs = study_runs()
    assert len(runs) == len(set(runs)) == 56
    assert [run.seed for run in runs] == sorted(run.seed for run in runs)
    assert (
        runs[0].command
        == "python src/train.py experiment=study cpu.num_threads=1 attention=none seed=1"
    )
    assert {run.overrides for run in runs} == {row.overrides for row in ROWS}


def test_the_toy_study_runs_every_scorer_of_both_wirings_three_times() -> None:
    runs = STUDIES["toy"].runs
    # (2 wirings x 8 scorers + no attention) x 3 seeds + 2 x (rnn, lstm) x 1 seed
    assert len(runs) == len(set(runs)) == 17 * 3 + 4
    assert {run.experiment for run in runs} == {"toy_study"}
    assert runs[1].command == (
        "python src/train.py experiment=toy_study cpu.num_threads=1 attention=bahdanau "
        "scorer=additive seed=1"
    )
    assert {run.overrides for run in runs} == {row.overrides for row in TOY_ROWS}
    names = [run.result_name for run in runs]
    assert len(set(names)) == len(names)
    assert names[1] == "toy_study-bahdanau-additive-gru-seed1.json"


@pytest.mark.timeout(60)
def test_missing_selects_exactly_the_runs_without_a_result_file(tmp_path: Path) -> None:
    runs = study_runs()[:4]
    for done in (runs[0], runs[2]):
        (tmp_path / done.result_name).write_text("{}")
    (tmp_path / "study-luong-other-seed9.json").write_text("{}")  # not one of these runs
    assert missing(runs, tmp_path) == [runs[1], runs[3]]
    # the names are those of the committed result files
    assert runs[0].result_name == "study-none-dot-gru-feed_False-tf_always-reverse_False-seed1.json"
    assert missing(runs, RESULTS) == []  # the attention section's first four: committed


def test_selected_leaves_out_the_skipped_runs_then_applies_the_limit() -> None:
    runs = study_runs()
    long_runs = [run for run in runs if "3000steps" in run.command]
    assert long_runs  # the study has 3,000-step rows to leave out
    kept = selected(runs, ["3000steps"], None)
    assert kept == [run for run in runs if run not in long_runs]
    assert (
        selected(runs, ["3000steps", "cell="], 2)
        == [run for run in kept if "cell=" not in run.command][:2]
    )
    assert selected(runs, [], None) == runs


def write_run_folder(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"val/bleu_best": 30.0, "test/bleu": 31.0, "params": 1000.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    git = {"commit": "668a6198b891e6624c4344732e03169f14666b37", "dirty": False}
    (folder / "run.json").write_text(json.dumps({"argv": ["src/train.py", "-m"], "git": git}))


@pytest.mark.timeout(60)
def test_finished_runs_are_exported_with_their_own_command_and_relative_paths(
    tmp_path: Path,
) -> None:
    logs, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    runs = study_runs()[:2]
    name = runs[1].result_name.removesuffix("-seed1.json")
    output_dir = str(Path(__file__).resolve().parents[1] / "logs" / "study" / "x" / "1_run")
    config = {"run_name": name, "seed": 1, "paths": {"output_dir": output_dir}}
    write_run_folder(logs / "x" / "1_run", config)
    write_run_folder(logs / "x" / "2_other", {**config, "run_name": "not-a-study-run"})
    assert export_finished(runs, logs, results) == 1
    exported = json.loads((results / runs[1].result_name).read_text())
    assert exported["command"] == runs[1].command
    assert exported["config"]["paths"]["output_dir"] == "logs/study/x/1_run"
    assert exported["commit"].startswith("668a619")
    assert [p.name for p in results.iterdir()] == [runs[1].result_name]
    assert export_finished(runs, logs, results) == 0  # exported once


def composed(overrides: list[str]) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "train", overrides=[*overrides, "paths.output_dir=out"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "run",
    [
        StudyRun(("attention=none", "model.reverse_source=true"), 1),
        StudyRun(("scorer=scaled_dot", "attention.input_feeding=true"), 3),
        StudyRun(("teacher_forcing=constant", "teacher_forcing.p=0.75"), 1),
        StudyRun((), 2),
        StudyRun(("attention=none", "model.bidirectional=false", "name_suffix=-uni"), 2),
        StudyRun(("attention=bahdanau", "scorer=location", "cell=lstm"), 1, "toy_study"),
    ],
    ids=lambda run: run.name,
)
def test_a_runs_experiment_config_composes_its_commands_config(
    tmp_path: Path, run: StudyRun
) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / f"{run.name}.yaml").write_text(run.experiment_config())
    from_file = composed([f"hydra.searchpath=[file://{tmp_path}]", f"experiment={run.name}"])
    from_command = composed(run.args)
    assert from_file == from_command
    assert from_file["seed"] == run.seed


@pytest.mark.timeout(60)
def test_an_interrupted_run_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    run = StudyRun(("scorer=scaled_general", "cell=rnn"), 3)
    other = StudyRun(("scorer=scaled_general", "cell=rnn"), 2)
    name = run.result_name.removesuffix(f"-seed{run.seed}.json")

    def folder(where: str, seed: int, finished: bool = False) -> Path:
        path = tmp_path / "logs" / where
        (path / "checkpoints").mkdir(parents=True)
        (path / "config.yaml").write_text(yaml.safe_dump({"run_name": name, "seed": seed}))
        (path / "checkpoints" / "last.ckpt").write_bytes(b"")
        if finished:
            (path / "metrics.json").write_text("{}")
        return path / "checkpoints" / "last.ckpt"

    logs = tmp_path / "logs"
    assert interrupted(run, logs) is None  # nothing there yet
    older = folder("s1/0_a", 3)
    newer = folder("s2/0_a", 3)
    os.utime(older, (1, 1))
    folder("s3/0_a", 2)  # another seed
    folder("s4/0_a", 3, finished=True)  # a finished run is exported, not resumed
    assert interrupted(run, logs) == newer
    assert (
        interrupted(other, logs) == tmp_path / "logs" / "s3" / "0_a" / "checkpoints" / "last.ckpt"
    )

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / f"{run.name}.yaml").write_text(run.experiment_config(newer))
    from_file = composed([f"hydra.searchpath=[file://{tmp_path}]", f"experiment={run.name}"])
    assert from_file["ckpt_path"] == str(newer)
    assert {k: v for k, v in from_file.items() if k != "ckpt_path"} == {
        k: v for k, v in composed(run.args).items() if k != "ckpt_path"
    }
