"""Typos on the command line: one line with the closest name, exit code 2, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from seq2attn.overrides import override_error

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"experiment": [p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["model.hiden_size=32"],
            "model.hiden_size: not a key of the train config; did you mean model.hidden_size? "
            "(to add a new key: +model.hiden_size=...)",
        ),
        (
            ["attention=bahdanau", "scorer=additive", "scorer.hiden_size=3"],
            "scorer.hiden_size: not a key of the train config; did you mean scorer.hidden_size? "
            "(to add a new key: +scorer.hiden_size=...)",
        ),
        (["-m", "cell=gru,lsmt"], "cell=lsmt: no such option; did you mean cell=lstm? "),
        (
            ["data=text_pairs", "data.val_algn=x"],
            "data.val_algn: not a key of the train config; did you mean data.val_align?",
        ),
    ],
)
def test_a_typo_gets_the_closest_name(argv: list[str], message: str) -> None:
    error = override_error("train", argv)
    assert error is not None and error.startswith(message)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "argv",
    [
        ["model.hidden_size=32", "seed=3", "-m", "cell=gru,lstm"],
        ["experiment=study", "name_suffix=-x", "+model.extra=1", "hydra.run.dir=x"],
        ["data=text_pairs", "data.val_align=x", "trainer.max_steps=5", "--cfg", "job"],
        ["scheduler=null", "callbacks.early_stopping=null"],
    ],
)
def test_keys_and_options_that_exist_pass(argv: list[str]) -> None:
    assert override_error("train", argv) is None


@pytest.mark.timeout(120)
def test_options_and_keys_of_an_added_search_path_pass(tmp_path: Path) -> None:
    """The study driver writes each row as an experiment option in a folder of its own and
    adds it with hydra.searchpath: its options and the keys they add are not typos."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "row_seed1.yaml").write_text(
        "# @package _global_\ndefaults:\n  - study\n  - _self_\nrow_note: x\n"
    )
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert override_error("train", [searchpath, "experiment=row_seed1", "row_note=y"]) is None
    assert override_error("train", [searchpath, "experiment=row_seed2"]) == (
        "experiment=row_seed2: no such option; did you mean experiment=row_seed1? "
        f"(options: {', '.join(sorted([*OPTIONS['experiment'], 'row_seed1']))})"
    )
    assert override_error("train", ["experiment=row_seed1"]) is not None


@pytest.mark.timeout(120)
def test_train_py_answers_a_typo_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "src/train.py", "model.hiden_size=32", f"hydra.run.dir={tmp_path}/r"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.hiden_size: not a key of the train config; did you mean "
        "model.hidden_size? (to add a new key: +model.hiden_size=...)"
    ]
    assert not (tmp_path / "r").exists()
